"""Batch refresh on Ray Data: ver-k embeddings of every user and item into Parquet, full or incremental, published atomically."""
