"""The baseline for bench_serve.py: a plain single-process FastAPI + numpy server doing the same
transform, the way a careful engineer would write it without bc_ray: JSON read and written with
orjson straight to and from numpy (as bc_ray's app does, so the comparison is of the serving
stack, not of JSON libraries); raw float32 body.

    python benchmarks/plain_server.py PORT DIM_IN DIM_OUT
"""

from __future__ import annotations

import sys

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
DIM_IN, DIM_OUT = int(sys.argv[2]), int(sys.argv[3])
WEIGHT = np.random.default_rng(0).normal(size=(DIM_OUT, DIM_IN)).astype(np.float32)


@app.post("/v1/transform")
async def transform(request: Request) -> Response:
    body = orjson.loads(await request.body())
    matrix = np.asarray(body["embeddings"], dtype=np.float32)
    return Response(orjson.dumps({"version": body["to_version"],
                                  "embeddings": matrix @ WEIGHT.T},
                                 option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


@app.post("/v1/transform-binary")
async def transform_binary(request: Request) -> Response:
    matrix = np.frombuffer(await request.body(), dtype="<f4").reshape(-1, DIM_IN)
    return Response((matrix @ WEIGHT.T).astype("<f4").tobytes(),
                    media_type="application/octet-stream")


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
