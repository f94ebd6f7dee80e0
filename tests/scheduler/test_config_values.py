"""The scheduler's waits are refused where they could not work: a negative or unbounded
backoff, poll, lease or job timeout (a negative backoff used to be taken as given)."""

import math

import pytest

from bc_ray.exceptions import ConfigError
from bc_ray.scheduler.config import SchedulerConfig


@pytest.mark.parametrize("field,value,named", [
    ("backoff_s", -1.0, "--backoff"), ("backoff_s", math.inf, "--backoff"),
    ("poll_s", 0.0, "poll_s"), ("lease_ttl_s", math.nan, "lease_ttl_s"),
    ("job_timeout_s", -5.0, "job_timeout_s"), ("publish_settle_s", -1.0, "publish_settle_s")])
def test_a_wait_that_cannot_work_is_refused(field, value, named):
    with pytest.raises(ConfigError, match=f"{named} must be a finite number of seconds"):
        SchedulerConfig(store="s3://b/s", ray_address="http://h:8265", **{field: value})
    assert SchedulerConfig(store="s3://b/s", ray_address="http://h:8265", backoff_s=0.0)
