"""The Delta view's copies (`<store>/delta/entity=*/...`): replaced ones are deleted once the
store's grace period has passed, and a fresh copy never looks old to a VACUUM."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from deltalake import DeltaTable

from bc_ray.store.maintenance import mirror_embeddings
from tests.helpers import refresh_fake_tables, store_with_chain


def _copies(root: Path) -> set[str]:
    return {str(p.relative_to(root / "delta")) for p in (root / "delta").glob("entity=*/**/*")
            if p.is_file()}


def test_copies_of_replaced_tables_are_deleted_after_the_grace(tmp_path):
    store, _ = store_with_chain(f"file://{tmp_path}/store", dims=[8], rows=20)  # grace 0
    rng = np.random.default_rng(3)
    for _ in range(3):
        refresh_fake_tables(store, 0, 20, rng)
    current = set(DeltaTable(f"{tmp_path}/store/delta").file_uris())
    current = {str(Path(uri.removeprefix("file://")).relative_to(tmp_path / "store" / "delta"))
               for uri in current}
    assert len(current) == 2  # one file per entity
    assert _copies(tmp_path / "store") == current


def test_a_linked_copy_of_an_old_file_has_a_fresh_mtime(tmp_path):
    store, _ = store_with_chain(f"file://{tmp_path}/store", dims=[8], rows=20)
    root = tmp_path / "store"
    three_days_ago = time.time() - 3 * 86_400
    for table in store.state().tables.values():
        for file in table.files:
            os.utime(root / file.path, (three_days_ago, three_days_ago))
    for copy in _copies(root):
        (root / "delta" / copy).unlink()

    started = time.time()
    mirror_embeddings(store)

    copies = _copies(root)
    assert copies and all(os.stat(root / "delta" / c).st_mtime >= started - 1 for c in copies)
    # a VACUUM that keeps a day of history takes none of them for an old untracked file
    DeltaTable(str(root / "delta")).vacuum(retention_hours=24, dry_run=False,
                                            enforce_retention_duration=False, full=True)
    assert _copies(root) == copies
