"""The whole lifecycle in one command: data, versions, refreshes, consumers, Serve, polars."""
