"""Partitioned work over the store that the sharded bump (train/) and the partitioned refresh
(refresh/) share: a snapshot's edge files read by Ray tasks (degrees, each entity's first
interaction), a model file read by spans, and what a task's memory allows.
"""
