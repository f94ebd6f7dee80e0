"""`bc-ray demo`: the README's main command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import DATASET_HELP, ModelOption, default_of, model_family
from bc_ray.lifecycle.config import DemoConfig


def demo(
    store: Annotated[Optional[str], typer.Option(
        help="Empty store URI (default: a new folder under ./demo-store).")] = None,
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = default_of(DemoConfig, "dataset"),
    versions: Annotated[int, typer.Option(help="Version bumps after version 0.")] = default_of(
        DemoConfig, "versions"),
    scale: Annotated[float, typer.Option(
        help="Synthetic data size (1.0 = 100k edges).")] = default_of(
        DemoConfig, "scale"),
    method: Annotated[str, typer.Option(help="bc-aligner, or e.g. non-bc to see consumers "
                                             "break.")] = default_of(DemoConfig, "method"),
    model: ModelOption = default_of(DemoConfig, "model"),
    num_workers: Annotated[int, typer.Option(help="Ray Train workers.")] = default_of(
        DemoConfig, "num_workers"),
    epochs: Annotated[int, typer.Option(help="Training epochs per version.")] = default_of(
        DemoConfig, "epochs"),
    port: Annotated[int, typer.Option(help="Port for the Serve stage.")] = default_of(
        DemoConfig, "port"),
    address: Annotated[Optional[str], typer.Option(help="Ray address (default: RAY_ADDRESS "
                                                        "or a local cluster).")] = None,
) -> None:
    """Run the whole lifecycle on Ray (RAY_ADDRESS or a local cluster) and show what happened."""
    import os

    from tqdm import tqdm

    from bc_ray.cluster import connect, enable_fast_ingress
    from bc_ray.exceptions import StoreError
    from bc_ray.lifecycle.demo import default_store, run_demo
    from bc_ray.lifecycle.report import save, text
    from bc_ray.store.store import Store

    model_family(model)
    config = DemoConfig(store=store or default_store(), dataset=dataset, versions=versions,
                        scale=scale, method=method, model=model, num_workers=num_workers,
                        epochs=epochs, port=port)
    if Store(config.store).state().seq >= 0:
        raise StoreError(f"{config.store} is not empty; the demo needs a fresh store")
    if not (address or os.environ.get("RAY_ADDRESS")):
        enable_fast_ingress()
    connect(address, num_cpus=max(4, os.cpu_count() or 1), quiet=True)
    log_path = _logs_to_file()
    typer.echo(f"full logs: {log_path}", err=True)
    stages = 5 + 5 * versions
    with tqdm(total=stages, desc="bc_ray demo", unit="stage") as bar:
        def progress(message: str) -> None:
            bar.set_postfix_str(message[:60])
            bar.update(1)

        report = run_demo(config, progress)
    locations = save(report, Store(config.store))
    typer.echo(text(report))
    typer.echo(f"report: {locations['json']}\nchart:  {locations['png']}\nlogs:   {log_path}")


def _logs_to_file() -> str:
    """The progress bar and the final table tell the story: bc_ray's and Ray's INFO logs (Ray
    Data's included, which print to the console by default) go to a file in the Ray session's
    log folder, beside Ray Data's own ray-data.log."""
    import importlib
    import logging
    import os

    for library in ("ray.data", "ray.serve"):  # importing them configures the loggers quieted here
        importlib.import_module(library)
    folder = _ray_data_log_folder() or os.getcwd()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "bc_ray-demo.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("bc_ray", "ray", "ray.data", "ray.serve", "ray.train"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        for console in logger.handlers:  # a FileHandler is a StreamHandler too
            if isinstance(console, logging.StreamHandler) and \
                    not isinstance(console, logging.FileHandler):
                console.setLevel(logging.WARNING)
    logging.getLogger("bc_ray").setLevel(logging.INFO)
    return path


def _ray_data_log_folder() -> str | None:
    """Where Ray Data writes ray-data.log: the session's log folder on this node, from public
    runtime-context calls (the session directory is the temp dir joined with the session name)."""
    import os

    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return os.path.join(context.get_temp_dir(), context.get_session_name(), "logs", "ray-data")
