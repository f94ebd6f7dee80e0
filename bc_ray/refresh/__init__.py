"""Batch refresh on Ray Data.

Ver-k embeddings of every user and item into Parquet, full or incremental, published atomically.
"""
