"""cluster.yaml, the KubeRay manifests, the Serve config and the Dockerfile are valid and point at
things that exist."""

import importlib
import re
import shlex

import pytest
import typer
import yaml
from croniter import croniter

from bc_ray.cli.main import app
from tests.conftest import REPO

INFRA = REPO / "infra"


def _load(path):
    return yaml.safe_load(path.read_text())


def _options(command) -> set[str]:
    return {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}


def _cli_command(*names):
    command = typer.main.get_command(app)
    for name in names:
        command = command.commands[name]
    return command


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(REPO / "cluster.yaml")
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws" and config["head_node_type"] in types
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert any("pip install" in c and "bc_ray" in c for c in config["setup_commands"])
    assert any("BC_RAY_STORE=s3://" in c for c in config["setup_commands"])


def test_raycluster_and_rayjob():
    cluster = _load(INFRA / "kuberay" / "raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    # The gpu group starts at zero: only an autoscaler starts it, for the bump that asks.
    assert groups["gpu"]["minReplicas"] == 0 and cluster["spec"]["enableInTreeAutoscaling"]
    job = _load(INFRA / "kuberay" / "rayjob-train.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    # The bump goes through the scheduler (lease, run records, retries), not around it.
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:4] == ["bc-ray", "scheduler", "once", "--kind"] and words[4] == "bump"
    once_options = _options(_cli_command("scheduler", "once"))
    train_args = words[words.index("--train-args") + 1]
    assert {w for w in words if w.startswith("--") and w != train_args} <= once_options
    train_args = shlex.split(train_args)
    assert {w for w in train_args if w.startswith("--")} <= _options(_cli_command("train"))
    assert "--use-gpu" in train_args


def test_rayservice_import_path_builds_the_real_application():
    from ray.serve import Application

    service = _load(INFRA / "kuberay" / "rayservice.yaml")
    assert service["kind"] == "RayService"
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config == _load(INFRA / "serve-config.yaml")
    [application] = serve_config["applications"]
    module, _, name = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), name)
    built = builder(application["args"])
    assert isinstance(built, Application)


def test_cronjob_runs_a_real_scheduler_command():
    cron = _load(INFRA / "kuberay" / "cronjob-refresh.yaml")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and croniter.is_valid(spec["schedule"])
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[:2] == ["scheduler", "once"]
    options = _options(_cli_command("scheduler", "once"))
    assert {a for a in args if a.startswith("--")} <= options
    env = {e["name"] for e in container["env"]}
    assert {"BC_RAY_STORE", "RAY_ADDRESS"} <= env  # the --store and --ray-address variables


def test_dockerfile_copies_what_exists_and_its_entry_point_is_the_cli():
    text = (INFRA / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY"):
            for source in shlex.split(line)[1:-1]:
                if not source.startswith("--"):
                    assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["bc-ray"]' in text
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'bc-ray = "bc_ray.cli.main:run"' in pyproject
    for script in re.findall(r"python (jobs/\w+\.py)", text):
        assert (REPO / script).is_file()


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO) for p in INFRA.rglob("*.yaml")))
def test_every_manifest_parses(path):
    documents = list(yaml.safe_load_all((REPO / path).read_text()))
    assert documents and all(documents)


def test_every_pod_that_can_host_a_replica_gets_the_token_and_no_bind_is_silent():
    """Issue 14, item 8: a pod without the token would serve without auth."""
    service = _load(INFRA / "kuberay" / "rayservice.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            [token] = [e for e in container["env"] if e["name"] == "BC_RAY_SERVE_TOKEN"]
            assert token["valueFrom"]["secretKeyRef"]["optional"] is False
    settings = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert "token" not in settings.get("settings", {})
    for path in [*INFRA.rglob("*.yaml"), REPO / "cluster.yaml"]:
        for line in path.read_text().splitlines():
            if "0.0.0.0" in line and not line.lstrip().startswith("#"):
                assert "Auth and exposure" in line, f"{path}: {line}"
