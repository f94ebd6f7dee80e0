"""The scheduler: nightly refreshes and version bumps as Ray jobs.

Exactly one at a time, recorded in the store.
"""
