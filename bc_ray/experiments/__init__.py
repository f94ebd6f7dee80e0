"""Experiments that reproduce the paper: the benchmark protocol and its report."""
