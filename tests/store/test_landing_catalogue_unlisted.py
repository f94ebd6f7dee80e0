"""A users/items root that cannot be listed (here: S3 answers Access Denied) is reported as
refused with the storage error; the interaction batches of the pass still land."""

from __future__ import annotations

import boto3
import polars as pl
import pytest
import requests

from bc_ray.ingest.landing import LandingConfig, ingest_landing
from bc_ray.store.store import Store
from tests.store.landing_helpers import MAPPING, ZONE, encoded, ingested_edges, rows, write


@pytest.fixture
def denied_s3_users(s3_server, monkeypatch):
    """An S3 users table this process's credentials may not read: an IAM user with no policy,
    and the S3 server checking every request from now on (restored afterwards)."""
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="denied-users")
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket="denied-users", Key="users/users.parquet",
        Body=encoded(pl.DataFrame({"uid": ["u1"], "team": ["a"]}), ".parquet"))
    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    iam.create_user(UserName="landing-without-access")
    key = iam.create_access_key(UserName="landing-without-access")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    previous = requests.post(f"{s3_server}/moto-api/reset-auth", data=b"0").json()
    try:
        yield "s3://denied-users/users"
    finally:
        requests.post(f"{s3_server}/moto-api/reset-auth",
                      data=str(previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]).encode())
        iam.delete_access_key(UserName="landing-without-access",
                              AccessKeyId=key["AccessKeyId"])
        iam.delete_user(UserName="landing-without-access")


def test_an_unlistable_users_root_is_reported_and_the_interactions_land(tmp_path,
                                                                         denied_s3_users):
    store = Store(f"file://{tmp_path}/store")
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 10), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", encoded(rows(10, 10), ".parquet"))
    config = LandingConfig(edges=store.io.uri_of(ZONE), mapping=MAPPING, users=denied_s3_users,
                           settle_seconds=0)

    report = ingest_landing(store, config)
    assert [t["batch"].rsplit("/", 1)[-1] for t in report.taken] == \
        ["dt=2026-11-21", "dt=2026-11-22"]
    assert ingested_edges(store) == 20
    (refused,) = report.refused
    assert refused["file"] == denied_s3_users and "Access Denied" in refused["error"]
    assert "\n" not in refused["error"]
