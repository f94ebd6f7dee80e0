"""Embeddings made elsewhere.

A team's own user and item tables published as the next version, with a post-hoc B_k.
"""
