"""Cloud credentials the way the SDKs find them (issue 17): bc_ray passes only the endpoint and
region; s3fs, pyarrow and polars each take credentials from their own default chain, so a
temporary credential with a session token (what EKS/IRSA, instance roles and SSO hand out)
works. The local S3 server checks the token: requests without it, or with a wrong one, fail."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from moto.core.authorization import enable_iam_authentication

from bc_ray import read_embeddings, scan_embeddings
from bc_ray.exceptions import ConfigError, StorageAccessError
from bc_ray.io import StorageOptions
from bc_ray.store.store import Store
from tests.helpers import store_with_chain

TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
S3_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@pytest.fixture
def temporary_credentials(s3_server, monkeypatch) -> tuple[str, dict]:
    """A bucket, and an assumed role's key, secret and session token in the environment."""
    bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    role = f"bc-ray-job-{uuid.uuid4().hex[:8]}"
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="s3", PolicyDocument=json.dumps(S3_ONLY))
    granted = boto3.client("sts", endpoint_url=s3_server, region_name="us-east-1").assume_role(
        RoleArn=arn, RoleSessionName="refresh")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", granted["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", granted["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", granted["SessionToken"])
    return f"s3://{bucket}/store", granted


def test_a_session_token_credential_reaches_s3fs_pyarrow_and_polars(temporary_credentials,
                                                                    monkeypatch):
    uri, _granted = temporary_credentials
    with enable_iam_authentication():
        _store, matrices = store_with_chain(uri, [8, 6], rows=40)  # s3fs writes the log
        latest = read_embeddings(uri, "item")  # pyarrow reads the table
        view = scan_embeddings(uri, "item", version=0).collect()  # polars reads it
        assert latest.height == view.height == 40
        store = Store(uri)
        for record in store.state().table(1, "user").files:
            store.verify(record)  # s3fs streams the sha256
        monkeypatch.setenv("AWS_SESSION_TOKEN", "not-the-token")
        with pytest.raises(StorageAccessError, match="cannot read s3://.*credentials"):
            Store(uri).state()
    assert matrices["item"].shape == (40, 6)


def test_only_what_the_user_set_is_passed_on(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-chain")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-chain")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    options = StorageOptions.from_env()
    assert (options.key, options.secret, options.token, options.region) == \
        (None, None, None, "eu-west-1")
    with pytest.raises(ConfigError, match="key and secret"):
        StorageOptions(key="k")
    with pytest.raises(ConfigError, match="session token"):
        StorageOptions(token="t")
