"""A landing zone that cannot work is one clear error, never a quiet day or a TypeError: a path
that does not exist, a landing YAML with a list where a path belongs, and a folder whose name
holds `[` is read literally, not as a glob."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bc_ray.cli.landing_options import load_landing
from bc_ray.exceptions import ConfigError, DataError
from bc_ray.ingest.landing import LandingConfig, ingest_landing
from bc_ray.ingest.sources import discover
from bc_ray.store.store import Store
from tests.store.landing_helpers import MAPPING, encoded, ingested_edges, rows, write


def test_a_landing_path_that_does_not_exist_is_an_error(store_uri):
    store = Store(store_uri)
    write(store, "landing/events/.keep", b"")  # an empty zone that exists is a quiet day
    quiet = LandingConfig(edges=store.io.uri_of("landing/events"), mapping=MAPPING)
    assert ingest_landing(store, quiet).taken == []
    for missing in (store.io.uri_of("landing/evnets"),
                    store.io.uri_of("landing/events").replace("://", "://no-such-bucket-") if
                    store.io.scheme == "s3" else "/no/such/landing"):
        config = LandingConfig(edges=missing, mapping=MAPPING)
        with pytest.raises(ConfigError, match="does not exist"):
            ingest_landing(store, config)


def test_a_path_with_brackets_is_taken_literally(store_uri):
    store = Store(store_uri)
    write(store, "landing/events[v2]/dt=2026-11-21/part-0.parquet",
          encoded(rows(0, 12), ".parquet"))
    write(store, "landing/eventsv/dt=2026-11-21/part-0.parquet", encoded(rows(50, 7), ".parquet"))
    config = LandingConfig(edges=store.io.uri_of("landing/events[v2]"), mapping=MAPPING,
                           settle_seconds=0)
    assert [t["edges"] for t in ingest_landing(store, config).taken] == [12]
    assert ingested_edges(store) == 12
    assert [s.size for s in discover(store.io.uri_of("landing/events[v2]"))] == \
        [store.io.fs.size(store.io.path("landing/events[v2]/dt=2026-11-21/part-0.parquet"))]


@pytest.mark.parametrize(("text", "named"), [
    ("edges: [s3://a/x, s3://a/y]\n", "edges"),
    ("edges: s3://a/x\nsettle_seconds: .inf\n", "settle_seconds"),
    ("edges: s3://a/x\nsettle_seconds: -1\n", "settle_seconds"),
    ("edges: s3://a/x\nrequire_success: 'yes'\n", "require_success"),
    ("edges: s3://a/x\nuser_col: [uid]\n", "user_col"),
])
def test_a_landing_yaml_of_the_wrong_types_is_a_config_error(tmp_path, text, named):
    path = tmp_path / "landing.yaml"
    path.write_text(text + "item_col: sku\ntime_col: ts\n" + ("" if "user_col" in text
                                                              else "user_col: uid\n"))
    with pytest.raises(ConfigError, match=named):
        load_landing(None, str(path))
    result = subprocess.run(
        [sys.executable, "-m", "bc_ray.cli.main", "data", "land", "--store",
         f"file://{tmp_path}/store", "--landing-config", str(path)],
        capture_output=True, text=True)
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_folder_of_files_without_extensions_says_how_to_read_them(store_uri):
    """Spark names its output part-00000: skipped where a folder's files are told apart by their
    extension, and said so, since nothing else would be read."""
    store = Store(store_uri)
    for part in range(2):
        write(store, f"out/part-0000{part}", encoded(rows(10 * part, 3), ".parquet"))
    with pytest.raises(DataError, match=r"no Parquet or CSV files found \(2 file\(s\) skipped "
                                        r".*--input-format"):
        discover(store.io.uri_of("out"))
    assert len(discover(store.io.uri_of("out"), "parquet")) == 2
