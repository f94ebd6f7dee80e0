"""Ingestion: where files come from (sources), the landing zone, and the batch workflow.

It sits above data/ (dataframe transforms) and store/ (records and bytes), and is the only room
that uses both to land data.
"""
