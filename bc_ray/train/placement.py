"""Whether the cluster can place a bump's workers; on a cluster that autoscales, asking its
autoscaler for them and waiting rather than refusing what the nodes alive now cannot hold.

Ray's autoscaler starts nodes for the demand it sees: a pending placement group, or a request
(`ray.autoscaler.sdk.request_resources`). A bump refused before its trainer asks shows none, so
a node type at zero (cluster.yaml's GPU workers, a KubeRay worker group at minReplicas 0) was
never started for it. Without an autoscaler nothing will come, and the bump is refused at once
(instead of Ray Train waiting forever for its placement group).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType

import ray

from bc_ray.exceptions import TrainingError

logger = logging.getLogger(__name__)
POLL_S = 1.0
PROGRESS_EVERY_S = 15.0


class PlacementError(TrainingError):
    """The workers cannot be placed: at once where no autoscaler runs (the same command meets
    it again), after `--placement-timeout` where one does (capacity may come later)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class Workers:
    """A bump's workers: how many, and what each asks Ray for."""

    count: int
    bundle: dict[str, float] = field(default_factory=dict)

    def said(self) -> str:
        asks = ", ".join(f"{value / 2**20:,.0f} MB {key}" if key == "memory" else
                         f"{value:g} {key}" for key, value in self.bundle.items())
        return f"{self.count} worker(s) of {asks}"


def placeable(bundle: dict[str, float], nodes: list[dict]) -> int:
    """How many `bundle`s the alive `nodes` (`ray.nodes()`) hold at once: a worker sits on one
    node, so a cluster's total is not enough where no single node has room."""
    asked = {key: value for key, value in bundle.items() if value > 0}
    count = 0
    for node in nodes:
        if node.get("Alive"):
            have = node.get("Resources", {})
            count += min((int(have.get(key, 0.0) / value + 1e-9) for key, value in asked.items()),
                         default=0)
    return count


def autoscaler_running() -> bool:
    """Ray has no public way to ask. A head always runs a monitor; without a cluster config it
    only mirrors the nodes, each its own type (`node_<id>`). Ray's v1 autoscaler (`ray up`,
    KubeRay's default) writes its status to the GCS every round, naming the config's node
    types; v2 reports the node types there with their limits."""
    try:
        from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
        from ray._private.state import state
        from ray.autoscaler._private.util import format_readonly_node_type
        from ray.experimental.internal_kv import _internal_kv_get

        config = state.get_cluster_config()
        if config is not None:
            return any(group.max_count == -1 or group.max_count > group.min_count
                       for group in config.node_group_configs)
        status = json.loads(_internal_kv_get(DEBUG_AUTOSCALING_STATUS) or b"{}")
        types = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
        return any(kind != format_readonly_node_type(node) for node, kind in types.items())
    except Exception:  # noqa: BLE001 - another Ray: the nodes alive are all there is
        return False


def _request(workers: Workers | None) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(workers.bundle)] * workers.count if workers else [])


class Placement:
    """The workers' placement over one job: a request made of the autoscaler lasts until the
    job ends (its driver's passes may outlast the autoscaler's idle timeout, and the nodes
    would go before the trainer asks for them), and is withdrawn then."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._requested = False

    def __enter__(self) -> Placement:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._requested:  # a request stands until the next: withdraw it, once
            self._requested = False
            _request(None)

    def wait(self, workers: Workers) -> bool:
        """True once the alive nodes can hold `workers`; False at once where they cannot and
        no autoscaler runs (the caller refuses in its own words). On a cluster that autoscales
        it asks for them and waits up to `timeout_s`, saying how it goes."""
        if workers.count == 0 or placeable(workers.bundle, ray.nodes()) >= workers.count:
            return True
        if not autoscaler_running():
            return False
        _request(workers)
        self._requested = True
        logger.info("asking the cluster's autoscaler for %s; waiting up to %.0f s "
                    "(--placement-timeout)", workers.said(), self.timeout_s)
        started = said = time.monotonic()
        while (fits := placeable(workers.bundle, ray.nodes())) < workers.count:
            waited = time.monotonic() - started
            if waited >= self.timeout_s:
                raise PlacementError(
                    f"the autoscaler did not add room for {workers.said()} within "
                    f"--placement-timeout {self.timeout_s:g} s (the nodes alive hold {fits}): "
                    "try again later, or raise the node types' max_workers", temporary=True)
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                logger.info("waiting for the autoscaler: room for %d of %d worker(s) after "
                            "%.0f s", fits, workers.count, waited)
                said = time.monotonic()
            time.sleep(POLL_S)
        logger.info("the cluster holds %s after %.0f s", workers.said(),
                    time.monotonic() - started)
        return True
