"""What a version published from embeddings made elsewhere cannot do: it has no model, so no
refresh recomputes its tables (its next embeddings come through `bc-ray publish`)."""

from __future__ import annotations

from bc_ray.exceptions import StoreError
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState


def check_refreshable(state: StoreState) -> None:
    """Refuse, before any cluster work, a refresh of a current version that `bc-ray publish`
    made."""
    if state.current_version is None or state.version().family != EXTERNAL_FAMILY:
        return
    raise StoreError(f"version {state.current_version} was published from embeddings made "
                     "elsewhere (`bc-ray publish`): it has no model to refresh with; publish "
                     "its next embeddings with `bc-ray publish`")
