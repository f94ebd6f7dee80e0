"""Credentials in a URI (issue 25, item 19): `s3://KEY:SECRET@bucket/prefix` was accepted,
`config show` printed the secret, a botocore traceback repeated it, and it would have gone into
the entry points of scheduled Ray jobs. User info in any store, landing, input or output URI
(s3:// or file://) is refused with a message that names the problem without the secret, and
whatever bc_ray prints (errors, logs, tracebacks, `config show`, run records) has it hidden.
Every output below is searched for the key and the secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bc_ray import export_embeddings, read_embeddings
from bc_ray.exceptions import ConfigError
from bc_ray.io import FileIO, StorageOptions
from bc_ray.redaction import RedactingFilter, redact
from bc_ray.scheduler.config import SchedulerConfig
from bc_ray.store.store import Store
from tests.helpers import store_with_chain

KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # a '/' and a '+', as AWS secrets have
REPO = Path(__file__).resolve().parents[2]


def leaks(text: str) -> bool:
    return KEY in text or SECRET in text or SECRET.split("/")[1] in text


def credential_uris(bucket: str, tmp_path) -> list[str]:
    return [f"s3://{KEY}:{SECRET}@{bucket}/store", f"s3://{KEY}@{bucket}/store",
            f"s3://{KEY}:{SECRET.replace('/', '@')}@{bucket}/store",
            f"file://{KEY}:{SECRET}@/{tmp_path}/store", f"file://{KEY}@localhost{tmp_path}/x"]


def cli(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The console script as a user runs it (its own process, its logging and error printing),
    from a scratch folder: a URI misread as a relative path lands nowhere that matters."""
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture
def bucket(s3_uri) -> str:
    return s3_uri.removeprefix("s3://").split("/")[0]


def test_the_api_refuses_user_info_without_repeating_it(bucket, tmp_path):
    clean = f"file://{tmp_path}/clean"
    store_with_chain(clean, [8, 6], rows=10)
    for uri in credential_uris(bucket, tmp_path):
        for attempt in (lambda: Store(uri).state(), lambda: FileIO(uri).exists("x"),
                        lambda: read_embeddings(uri, "item"),
                        lambda: export_embeddings(clean, f"{uri}/items.parquet", "item")):
            with pytest.raises(ConfigError, match="carries credentials") as caught:
                attempt()
            assert not leaks(str(caught.value)) and "***@" in str(caught.value)
    with pytest.raises(ConfigError, match="S3 endpoint") as caught:
        StorageOptions(endpoint_url=f"http://{KEY}:{SECRET}@127.0.0.1:9000")
    assert not leaks(str(caught.value))


def test_no_scheduled_job_can_carry_them(bucket, tmp_path, monkeypatch):
    """The scheduler's store, landing zone and job arguments are refused before any entry point
    or runtime environment is built, and so is a variable it would forward to the jobs."""
    from bc_ray.data.mapping import ColumnMapping
    from bc_ray.scheduler.jobs import entrypoint
    from bc_ray.ingest.landing import LandingConfig

    uri = credential_uris(bucket, tmp_path)[0]
    mapping = ColumnMapping(user_col="u", item_col="i", time_col="t")
    attempts = [dict(store=uri), dict(refresh_args=["--edges", uri]),
                dict(train_args=["--store", uri]),
                dict(landing=LandingConfig(edges=uri, mapping=mapping))]
    for values in attempts:
        with pytest.raises(ConfigError, match="carries credentials") as caught:
            SchedulerConfig(**{"store": f"s3://{bucket}/store", "ray_address": "http://h:8265",
                               **values})
        assert not leaks(str(caught.value))
    config = SchedulerConfig(store=f"s3://{bucket}/store", ray_address="http://h:8265")
    assert entrypoint(config, "refresh")[0].endswith(f"--store s3://{bucket}/store")
    monkeypatch.setenv("BC_RAY_STORE", uri)  # beside an explicit --store: still forwarded
    with pytest.raises(ConfigError, match="BC_RAY_STORE .*carries credentials") as caught:
        entrypoint(config, "refresh")
    assert not leaks(str(caught.value))


def test_every_command_refuses_them_in_one_line_without_the_secret(bucket, tmp_path):
    clean = f"file://{tmp_path}/clean"
    store_with_chain(clean, [8, 6], rows=10)
    uri = credential_uris(bucket, tmp_path)[0]
    runs = [cli(tmp_path, "versions", "--store", uri),
            cli(tmp_path, "store", "config", "--store", uri, "--json"),
            cli(tmp_path, "export", "--store", clean, "--out", f"{uri}/items.parquet"),
            cli(tmp_path, "export", "--store", clean, "--format", "delta", "--out", uri),
            cli(tmp_path, "scheduler", "once", "--store", clean, "--kind", "refresh",
                "--ray-address", "http://127.0.0.1:9", "--landing", f"{uri}/landing",
                "--user-col", "u", "--item-col", "i", "--time-col", "t"),
            cli(tmp_path, "scheduler", "once", "--store", clean, "--kind", "refresh",
                "--ray-address", "http://127.0.0.1:9", "--refresh-args", f"--edges {uri}")]
    for done in runs:
        output = done.stdout + done.stderr
        assert not leaks(output), output
        assert done.returncode == 2, output
        assert done.stderr.strip().count("\n") == 0 and "carries credentials" in done.stderr


def test_config_show_hides_them_and_a_config_file_refuses_them(bucket, tmp_path):
    uri = credential_uris(bucket, tmp_path)[0]
    for as_json in ([], ["--json"]):
        done = cli(tmp_path, "config", "show", *as_json, env={"BC_RAY_STORE": uri})
        assert done.returncode == 0, done.stderr
        assert not leaks(done.stdout + done.stderr), done.stdout
        assert f"s3://***@{bucket}/store" in done.stdout
    rows = json.loads(done.stdout)
    assert {"setting": "store", "value": f"s3://***@{bucket}/store",
            "source": "env BC_RAY_STORE"} in rows
    config = tmp_path / "bc_ray.yaml"
    for text in (f"store: {uri}\n", f"s3: {{endpoint_url: 'http://{KEY}:{SECRET}@h:9000'}}\n",
                 f"scheduler: {{landing: {{edges: '{uri}/landing'}}}}\n"):
        config.write_text(text)
        done = cli(tmp_path, "--config", str(config), "config", "show")
        assert done.returncode == 2 and "carries credentials" in done.stderr, done.stderr
        assert not leaks(done.stdout + done.stderr), done.stderr


def test_logs_and_tracebacks_are_redacted(bucket, tmp_path):
    """What a library (botocore, s3fs) logs passes through the CLI's handler filter."""
    uri = credential_uris(bucket, tmp_path)[0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("cannot reach %s", uri)
        try:
            raise OSError(f"Access Denied for {uri}")
        except OSError:
            logger.exception("request to %s failed", uri)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert not leaks(text), text
    assert text.count(f"s3://***@{bucket}/store") == 3
    assert redact(f"a {uri} b s3://{bucket}/with@sign") == \
        f"a s3://***@{bucket}/store b s3://{bucket}/with@sign"
