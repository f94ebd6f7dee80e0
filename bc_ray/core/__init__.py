"""The BC-Aligner science in plain PyTorch: models, transforms, losses, methods, evaluation.

Imports no Ray and no storage code (and this __init__ imports nothing, so numpy-only modules stay
light).
"""
