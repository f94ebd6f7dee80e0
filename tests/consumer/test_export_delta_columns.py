"""The exported Delta table has the store's own Delta columns and types (issue 25, item 13):
an engine reading both never meets `version` in one and `source_version` in the other."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from deltalake import DeltaTable

from bc_ray import export_delta
from tests.helpers import store_with_chain


def test_an_export_has_the_columns_and_types_of_the_store_delta_table(tmp_path):
    store, matrices = store_with_chain(f"file://{tmp_path}/store", dims=[8, 6], rows=30)
    mirrored = DeltaTable(f"{tmp_path}/store/delta")
    out = tmp_path / "view-v0"

    rows = export_delta(store.uri, str(out), version=0)

    exported = DeltaTable(str(out))
    assert exported.schema().to_arrow() == mirrored.schema().to_arrow()
    assert exported.metadata().partition_columns == mirrored.metadata().partition_columns
    table = exported.to_pyarrow_table()
    assert rows == {"user": 30, "item": 30} and table.num_rows == 60
    assert set(table.column("version").to_pylist()) == {0}  # the space the rows are in
    record = store.state().table(1, "item")
    refreshed = set(table.column("refreshed_at").to_pylist())
    assert refreshed == {datetime.fromisoformat(record.refreshed_at)}
    items = table.filter(np.array(table.column("entity").to_pylist()) == "item")
    vectors = np.asarray(items.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (30, 8) and not np.allclose(vectors[:, :6], matrices["item"])
