"""The embedding store: the version log and its typed actions (log, actions), what a version is
(state), commits of bytes (store), and what runs after commits (maintenance).

Importing the package registers the post-commit hooks (`maintenance`), so every process that
commits runs the same follow-up steps whichever store module it imported first.
"""

from bc_ray.store import maintenance  # registers the post-commit hooks

__all__ = ["maintenance"]
