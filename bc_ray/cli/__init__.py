"""The `bc-ray` command line: parsing here, rendering in output.py."""
