"""The `bc-ray` command line: parsing here, output in output.py (text tables from bc_ray/render.py)."""
