"""A plug-in family checked on every node of the cluster before a job loads it there.

Ray Train workers and refresh tasks rebuild the model by its family's name, each from its own
node's environment. A plug-in installed where the job is launched but not in the cluster's image
otherwise fails inside every worker, as a worker group's traceback; here it is one line before
any worker starts, naming the nodes and what their import said. A node with another release of
the plug-in's package than this process is refused the same way: its workers would train or
embed with other code than the one the version records (where one side has the family from no
installed package, code shipped by a runtime_env, say, it is only said).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bc_ray.cluster import on_every_node
from bc_ray.core.registry import BUILT_IN, family_requirement, get_family, load_report
from bc_ray.exceptions import ConfigError

logger = logging.getLogger(__name__)


def check_loads_on_cluster(names: Iterable[str]) -> None:
    """Every family of `names` loads on every node of the connected cluster, from the same
    release of its package as here (the built-ins come with bc_ray itself and are not asked
    about)."""
    for name in sorted(n for n in set(names) if get_family(n).name not in BUILT_IN):
        answers = on_every_node(load_report, name)
        failed = {node: answer for node, answer in answers.items() if answer[1][0] is not None}
        if failed:
            node, (address, (error, _)) = next(iter(failed.items()))
            raise ConfigError(f"model family {name!r} loads here but not on {len(failed)} of the "
                              f"cluster's {len(answers)} nodes (node {node[:12]} at {address}: "
                              f"{error}); install the package that "
                              "provides it on every node (the cluster's image, or the job's "
                              "runtime_env), not only where the job is launched")
        here = family_requirement(name)
        other = {node: answer for node, answer in answers.items() if answer[1][1] != here}
        if other:
            node, (address, (_, there)) = next(iter(other.items()))
            said = (f"model family {name!r} is {_release(here)} here but {_release(there)} on "
                    f"{len(other)} of the cluster's {len(answers)} nodes (node {node[:12]} at "
                    f"{address})")
            if here is None or there is None:  # a module shipped as code: which release is it?
                logger.warning("%s; if that is not the same code, install one release on every "
                               "node and where the job is launched", said)
                continue
            raise ConfigError(f"{said}; install one release on every node and where the job "
                              "is launched")


def _release(requirement: str | None) -> str:
    return requirement or "from no installed package"
