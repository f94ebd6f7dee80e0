"""Whether the cluster can place a job's workers or tasks; on a cluster that autoscales,
asking its autoscaler for them and waiting rather than refusing what the nodes alive now cannot
hold, or sizing a job by them.

Ray's autoscaler starts nodes for the demand it sees: a pending placement group, or a request
(`ray.autoscaler.sdk.request_resources`). A bump refused before its trainer asks shows none, so
a node type at zero (cluster.yaml's GPU workers, a KubeRay worker group at minReplicas 0) was
never started for it; a refresh sized its ranges by the head alone. Without an autoscaler
nothing will come, and a job the nodes cannot place is refused at once (instead of Ray waiting
forever for its placement group or tasks).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import ray

from bc_ray.exceptions import PlacementError

if TYPE_CHECKING:
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

logger = logging.getLogger(__name__)
POLL_S = 1.0
PROGRESS_EVERY_S = 15.0
FRESH_STATUS_S = 120.0  # a v1 autoscaler's status older than this is a dead monitor's
# A standing request is renewed every RENEW_S and lapses EXPIRE_S after the last renewal (Ray
# Train's own are renewed every 20 s and lapse after 180 s).
RENEW_S = 20.0
EXPIRE_S = 120.0
CALL_TIMEOUT_S = 10.0  # a call to the coordinator or the GCS (Ray Train's own: 5 s)


@dataclass(frozen=True)
class Workers:
    """A job's workers (or tasks at once): how many, and what each asks Ray for."""

    count: int
    bundle: dict[str, float] = field(default_factory=dict)
    kind: str = "worker"

    def said(self) -> str:
        asks = ", ".join(f"{value / 2**20:,.0f} MB {key}" if key == "memory" else
                         f"{value:g} {key}" for key, value in self.bundle.items())
        return f"{self.count} {self.kind}(s) of {asks}"


def placeable(bundle: dict[str, float], nodes: list[dict]) -> int:
    """How many `bundle`s the alive `nodes` (`ray.nodes()`) hold at once: a worker sits on one
    node, so a cluster's total is not enough where no single node has room."""
    asked = {key: value for key, value in bundle.items() if value > 0}
    if not asked:  # it asks for nothing: any number fit
        return 1 << 30
    count = 0
    for node in nodes:
        if node.get("Alive"):
            have = node.get("Resources", {})
            count += min((int(have.get(key, 0.0) / value + 1e-9) for key, value in asked.items()),
                         default=0)
    return count


def autoscaler_running() -> bool:
    """Ray has no public way to ask. Every head runs a monitor: v2 (`ray up`'s default since
    Ray 2.50, KubeRay's where its pods say their node type) or v1. v2's judges every request,
    and one no node type can hold (all of them, where it only mirrors the nodes) is reported
    infeasible within a round (`_infeasible`). v1's without a cluster config only mirrors the
    nodes, each its own type (`node_<id>`); an autoscaler writes its status every round naming
    the config's node types."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2
    except ImportError:  # another Ray: the nodes alive are all there is
        return False
    try:
        return is_autoscaler_v2(fetch_from_server=True) or _v1_autoscaler_running()
    except (ImportError, AttributeError):  # another Ray, as above
        logger.warning("cannot tell whether an autoscaler runs: the nodes alive are all there "
                       "is", exc_info=True)
        return False
    except Exception as error:  # noqa: BLE001 - the GCS, busy or unreachable: later may do
        raise PlacementError(f"cannot tell whether the cluster autoscales: {error}",
                             temporary=True) from error


def _v1_autoscaler_running() -> bool:
    """v1's status, written lately (its round is 5 s; a dead monitor's stays), naming a node
    type of a cluster config."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.autoscaler._private.util import format_readonly_node_type
    from ray.experimental.internal_kv import _internal_kv_get

    status = json.loads(_internal_kv_get(DEBUG_AUTOSCALING_STATUS) or b"{}")
    if time.time() - status.get("time", 0.0) > FRESH_STATUS_S:
        return False
    types = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(kind != format_readonly_node_type(node) for node, kind in types.items())


def _shape(bundle: Mapping[str, float]) -> tuple:
    return tuple(sorted((key, round(float(value), 3)) for key, value in bundle.items()))


def _v2_status() -> GetClusterStatusReply | None:
    """Autoscaler v2's state as the GCS holds it (`GetClusterStatusReply`); None under v1."""
    from ray._private.worker import global_worker
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

    if not is_autoscaler_v2():
        return None
    reply = GetClusterStatusReply()
    reply.ParseFromString(global_worker.gcs_client.get_cluster_status(timeout_s=CALL_TIMEOUT_S))
    return reply


def _infeasible(bundles: list[dict[str, float]], asked_at: int) -> bool:
    """Whether autoscaler v2, in a round that saw the cluster's state as of `asked_at` (a
    state version read once our request stood), reported our request, and only ours, as one
    no node type can hold. A request merged with others' (the coordinator sends them as one)
    proves nothing about ours: its wait runs out instead, as every wait under v1, which
    reports none."""
    try:
        reply = _v2_status()
    except Exception:  # noqa: BLE001 - not known: the wait goes on
        logger.debug("cannot read the autoscaler's state", exc_info=True)
        return False
    if reply is None or reply.autoscaling_state.last_seen_cluster_resource_state_version \
            < asked_at:
        return False
    ours = Counter(_shape(bundle) for bundle in bundles)
    for constraint in reply.autoscaling_state.infeasible_cluster_resource_constraints:
        asked: Counter = Counter()
        for by_count in constraint.resource_requests:
            asked[_shape(by_count.request.resources_bundle)] += by_count.count
        if asked == ours:
            return True
    return False


def _state_version() -> int:
    """The GCS's cluster state version now (0 under v1, or where it cannot be read)."""
    try:
        reply = _v2_status()
    except Exception:  # noqa: BLE001 - then no report is trusted as ours
        return 1 << 62
    return 0 if reply is None else reply.cluster_resource_state.cluster_resource_state_version


class _Request:
    """A standing request for bundles, made through Ray's AutoscalingCoordinator: it merges the
    requests of Ray Data, Ray Train and ours into the one the autoscaler reads, and overwrites
    any made around it within its tick. Renewed while it stands; it lapses `EXPIRE_S` after
    the last renewal, so a driver killed meanwhile leaves nothing asked for. Its priority is
    low: it only orders what the coordinator reserves for each requester, and reserving the
    alive nodes for a job that is not yet running would hold them from others'."""

    def __init__(self, bundles: list[dict[str, float]]) -> None:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )

        self.requester = f"bc-ray-{uuid.uuid4().hex[:8]}"
        self.bundles = bundles
        self._coordinator = get_or_create_autoscaling_coordinator()
        try:
            self._send()
        except BaseException:  # it may still land: a cancel sent after it lands after it
            self._coordinator.cancel_request.remote(self.requester)
            raise
        self.asked_at = _state_version()
        self._stop = threading.Event()
        self._renewing = threading.Thread(target=self._renew, name="placement-request",
                                          daemon=True)
        self._renewing.start()

    def _send(self) -> None:
        from ray.data._internal.cluster_autoscaler.base_autoscaling_coordinator import (
            ResourceRequestPriority,
        )

        ray.get(self._coordinator.request_resources.remote(
            requester_id=self.requester, resources=self.bundles, expire_after_s=EXPIRE_S,
            priority=ResourceRequestPriority.LOW), timeout=CALL_TIMEOUT_S)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self._send()
            except Exception:  # noqa: BLE001 - the next renewal may pass; else it lapses
                logger.warning("could not renew the request for nodes", exc_info=True)

    def cancel(self) -> None:
        self._stop.set()
        self._renewing.join(timeout=CALL_TIMEOUT_S + 1)
        ray.get(self._coordinator.cancel_request.remote(self.requester),
                timeout=CALL_TIMEOUT_S)


class Placement:
    """A job's placement, before its own work (a trainer, tasks) asks Ray for what it runs on:
    a request made of the autoscaler stands while the driver prepares (its passes may outlast
    the autoscaler's idle timeout, and the nodes would go before the work asks for them), and
    is withdrawn then (`release`; two standing requests would have it start nodes twice). One
    `timeout_s` bounds all of a job's waits together (not the driver's work between them)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._request: _Request | None = None
        self._spent = 0.0  # in waits so far: the driver's work between them is not counted

    def __enter__(self) -> Placement:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        """Withdraw the request, if one stands (it lapses by itself where this fails)."""
        request, self._request = self._request, None
        if request is not None:
            try:
                request.cancel()
            except Exception:  # noqa: BLE001 - never in place of the job's own outcome
                logger.warning("could not withdraw the request for nodes (it lapses within "
                               "%.0f s)", EXPIRE_S, exc_info=True)

    def wait(self, workers: Workers, enough: int | None = None) -> bool:
        """True once the alive nodes can hold `workers` (or `enough` of them); False at once
        where they cannot and no autoscaler runs, or `timeout_s` is 0 (the caller refuses in
        its own words). On a cluster that autoscales it asks for all of them (for `enough`,
        where all are more than any node types hold) and waits, saying how it goes."""
        need = workers.count if enough is None else min(enough, workers.count)
        if need == 0 or placeable(workers.bundle, ray.nodes()) >= need:
            return True
        if self.timeout_s == 0 or not autoscaler_running():
            return False
        asked = self._ask(workers)
        started = said = time.monotonic()
        try:
            while (fits := placeable(workers.bundle, ray.nodes())) < need:
                if _infeasible(self._request.bundles, self._request.asked_at):
                    if asked.count == need:
                        raise PlacementError(
                            f"the cluster cannot hold {asked.said()}: its nodes alive hold "
                            f"{fits}, and its autoscaler reports that no node type it may "
                            "start can (none, where it does not autoscale)")
                    asked = self._ask(Workers(need, workers.bundle, workers.kind))
                if time.monotonic() - started >= self.timeout_s - self._spent:
                    raise PlacementError(
                        f"the autoscaler did not add room for {asked.said()} within "
                        f"--placement-timeout {self.timeout_s:g} s (the nodes alive hold "
                        f"{fits}): try again later, or give the node types more max_workers "
                        "(or a type that holds one)", temporary=True)
                if time.monotonic() - said >= PROGRESS_EVERY_S:
                    logger.info("waiting for the autoscaler: room for %d of %d %s(s) after "
                                "%.0f s", fits, need, workers.kind, time.monotonic() - started)
                    said = time.monotonic()
                time.sleep(POLL_S)
        finally:
            self._spent += time.monotonic() - started
        logger.info("the cluster holds %d of %s after %.0f s", fits, workers.said(),
                    time.monotonic() - started)
        return True

    def _ask(self, workers: Workers) -> Workers:
        """Ask anew for `workers` (a later wait asks for what it needs)."""
        self.release()
        try:
            self._request = _Request([dict(workers.bundle)] * workers.count)
        except Exception as error:  # noqa: BLE001 - Ray's coordinator or the GCS, unreachable
            raise PlacementError(f"could not ask the cluster's autoscaler for "
                                 f"{workers.said()}: {error}", temporary=True) from error
        logger.info("asking the cluster's autoscaler for %s; waiting up to %.0f s "
                    "(--placement-timeout)", workers.said(), self.timeout_s - self._spent)
        return workers
