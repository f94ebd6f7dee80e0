"""Ray Serve: compatibility transforms and compatible embeddings over HTTP, hot-reloaded from the store."""
