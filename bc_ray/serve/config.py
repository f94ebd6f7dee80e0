"""Typed configuration of the compatibility service (deployment options and runtime settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TOKEN_ENV = "BC_RAY_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeSettings:
    """Runtime settings, applied by `reconfigure` (a `user_config` change needs no restart)."""

    max_rows: int = 4096  # per request; above it the answer is 413
    max_batch_size: int = 64  # @serve.batch: requests merged into one matmul
    batch_wait_timeout_s: float = 0.0
    poll_interval_s: float = 2.0  # how often replicas look for a new version or refresh
    token: str | None = None  # bearer token; auth is on whenever one is configured

    @classmethod
    def from_dict(cls, data: dict | None) -> ServeSettings:
        data = dict(data or {})
        data.setdefault("token", os.environ.get(TOKEN_ENV) or None)
        return cls(**data)


@dataclass(frozen=True)
class ServeConfig:
    store: str
    num_replicas: int | None = 1
    min_replicas: int | None = None  # set both to autoscale instead of a fixed count
    max_replicas: int | None = None
    max_ongoing_requests: int = 64
    settings: ServeSettings = field(default_factory=ServeSettings)
    name: str = "bc-ray"
    route_prefix: str = "/"

    def deployment_options(self) -> dict:
        options: dict = {"max_ongoing_requests": self.max_ongoing_requests,
                         "user_config": {k: v for k, v in vars(self.settings).items()}}
        if self.min_replicas is not None and self.max_replicas is not None:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas,
                                             "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": 8}
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options
