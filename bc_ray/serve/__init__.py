"""Ray Serve: compatibility transforms and compatible embeddings over HTTP.

Hot-reloaded from the store.
"""
