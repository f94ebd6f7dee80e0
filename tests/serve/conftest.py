"""One deployed compatibility service shared by the serve tests."""

import httpx
import pytest

from bc_ray.serve.app import build_app
from bc_ray.serve.config import ServeConfig, ServeSettings
from tests.helpers import store_with_chain


@pytest.fixture(scope="package")
def service(serve_port, tmp_path_factory):
    from ray import serve

    uri = f"file://{tmp_path_factory.mktemp('serve')}/store"
    store, _ = store_with_chain(uri, [12, 10, 8], rows=40, keep_versions=1)
    config = ServeConfig(store=uri, settings=ServeSettings(max_rows=100, poll_interval_s=0.3))
    serve.run(build_app(config), name="bc-ray-test", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=30) as client:
        yield client, store, uri
    serve.delete("bc-ray-test")


