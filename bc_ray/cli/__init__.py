"""The `bc-ray` command line.

Parsing here, output in output.py (text tables from bc_ray/render.py).
"""
