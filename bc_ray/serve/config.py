"""Typed configuration of the compatibility service (deployment options and runtime settings).

The bearer token is never part of the configuration: Ray's Serve REST API returns a deployment's
`user_config` to anyone who can read the dashboard. Replicas read it from the environment
(BC_RAY_SERVE_TOKEN, e.g. from a Kubernetes secret) or from a file (`token_file`, a mounted secret).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bc_ray.exceptions import ConfigError

TOKEN_ENV = "BC_RAY_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeSettings:
    """Runtime settings, applied by `reconfigure` (a `user_config` change needs no restart)."""

    max_rows: int = 4096  # per request; above it the answer is 413
    max_batch_size: int = 64  # @serve.batch: requests merged into one matmul
    batch_wait_timeout_s: float = 0.0
    poll_interval_s: float = 2.0  # how often replicas look for a new version or refresh
    # /readyz answers 503 when the replica could not confirm it serves the store's current state
    # for this long (the store unreachable or damaged): a load balancer stops sending it traffic.
    max_staleness_s: float = 120.0
    token_file: str | None = None  # a file holding the bearer token (else BC_RAY_SERVE_TOKEN)

    def __post_init__(self) -> None:
        if self.max_staleness_s <= 2 * self.poll_interval_s:
            raise ConfigError(f"max_staleness_s ({self.max_staleness_s:g}) must exceed two poll "
                              f"intervals ({self.poll_interval_s:g} s each)")

    @classmethod
    def from_dict(cls, data: dict | None) -> ServeSettings:
        data = dict(data or {})
        if "token" in data:
            raise ConfigError("the Serve settings must not hold the bearer token (Ray's REST API "
                              f"shows them): set {TOKEN_ENV} in the replicas' environment or "
                              "point `token_file` at a mounted secret")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown Serve settings {sorted(unknown)}; known: "
                              f"{sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def resolve_token(self) -> str | None:
        """The bearer token, or None (auth off) only when neither source is configured; a
        configured source that yields nothing is an error, never a silent auth-off."""
        if self.token_file is not None:
            try:
                with open(self.token_file, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the Serve token file {self.token_file}: "
                                  f"{exc}") from exc
            if not token:
                raise ConfigError(f"the Serve token file {self.token_file} is empty")
            return token
        return os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True)
class ServeConfig:
    store: str
    num_replicas: int | None = 1
    min_replicas: int | None = None  # set both to autoscale instead of a fixed count
    max_replicas: int | None = None
    max_ongoing_requests: int = 64
    # Requests waiting for a replica beyond this are refused with 503 at once instead of queueing
    # without bound; `request_timeout_s` (an HTTP option) ends a request that takes longer (408).
    max_queued_requests: int = 256
    request_timeout_s: float = 30.0
    # A stopping replica (rollout, scale-in, shutdown) gets this long for requests in flight,
    # which take milliseconds; Serve's default (20 s) made `bc-ray serve` take ~30 s to stop.
    graceful_shutdown_timeout_s: float = 5.0
    settings: ServeSettings = field(default_factory=ServeSettings)
    name: str = "bc-ray"
    route_prefix: str = "/"

    def deployment_options(self) -> dict:
        options: dict = {"max_ongoing_requests": self.max_ongoing_requests,
                         "max_queued_requests": self.max_queued_requests,
                         "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
                         "user_config": dict(vars(self.settings))}
        if self.min_replicas is not None and self.max_replicas is not None:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas,
                                             "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": 8}
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options

    def http_options(self, host: str, port: int) -> dict:
        return {"host": host, "port": port, "request_timeout_s": self.request_timeout_s}
