"""Typed configuration of the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from croniter import croniter

from bc_ray.exceptions import ConfigError
from bc_ray.ingest.landing_config import LandingConfig
from bc_ray.redaction import refuse_user_info

KINDS = ("refresh", "bump")


@dataclass(frozen=True)
class SchedulerConfig:
    store: str
    ray_address: str  # the Jobs API, e.g. http://HEAD:8265
    refresh_cron: str | None = "0 2 * * *"
    bump_cron: str | None = "0 3 * * 0"
    python: str = "python"  # interpreter on the cluster (the entrypoint runs with its PATH)
    working_dir: str | None = None  # uploaded as the job's working_dir (else: installed package)
    train_args: list[str] = field(default_factory=list)  # extra flags for jobs/train.py
    refresh_args: list[str] = field(default_factory=list)
    max_attempts: int = 3
    backoff_s: float = 60.0  # first retry delay; doubles each attempt
    poll_s: float = 5.0
    lease_ttl_s: float = 900.0
    job_timeout_s: float = 6 * 3600.0
    landing: LandingConfig | None = None  # ingest new landed files before every refresh
    # Bumps publish each new folder of embeddings made elsewhere (`publish_from.py`) instead
    # of training; `publish_args` are extra flags for jobs/publish.py.
    publish_from: str | None = None
    publish_args: list[str] = field(default_factory=list)
    publish_settle_s: float = 60.0  # a folder without _SUCCESS is taken once this quiet

    def __post_init__(self) -> None:
        for name in ("refresh_cron", "bump_cron"):
            value = getattr(self, name)
            if value is not None and not croniter.is_valid(value):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r} is not a cron expression")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be >= 1")
        for option, seconds, least in (("--backoff", self.backoff_s, 0.0),
                                       ("poll_s", self.poll_s, 1e-3),
                                       ("lease_ttl_s", self.lease_ttl_s, 1e-3),
                                       ("job_timeout_s", self.job_timeout_s, 1e-3),
                                       ("publish_settle_s", self.publish_settle_s, 0.0)):
            if not least <= seconds < float("inf"):  # NaN fails both
                raise ConfigError(f"{option} must be a finite number of seconds >= {least:g}, "
                                  f"got {seconds}")
        self._refuse_credentials()

    def _refuse_credentials(self) -> None:
        """Every URI here goes into job entry points and runtime environments, which anyone who
        can read the Jobs API sees: none may carry credentials."""
        refuse_user_info(self.store, "--store")
        if self.publish_from is not None:
            refuse_user_info(self.publish_from, "--publish-from")
        for name in ("train_args", "refresh_args", "publish_args"):
            for word in getattr(self, name):
                refuse_user_info(word, f"--{name.replace('_', '-')}")
        if self.landing is not None:
            for name in ("edges", "users", "items"):
                if (uri := getattr(self.landing, name)) is not None:
                    refuse_user_info(uri, "--landing" if name == "edges" else f"landing {name}")

    def cron(self, kind: str) -> str | None:
        return self.refresh_cron if kind == "refresh" else self.bump_cron
