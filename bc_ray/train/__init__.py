"""Distributed joint training on Ray Train.

TorchTrainer runs the core training loop (DDP) and the driver gates and registers the version.
"""
