"""The baseline for bench_serve.py: a plain single-process FastAPI + numpy server doing the same
transform, the way one would write it without bc_ray (pydantic JSON body; raw float32 body).

    python benchmarks/plain_server.py PORT DIM_IN DIM_OUT
"""

from __future__ import annotations

import sys

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

app = FastAPI()
DIM_IN, DIM_OUT = int(sys.argv[2]), int(sys.argv[3])
WEIGHT = np.random.default_rng(0).normal(size=(DIM_OUT, DIM_IN)).astype(np.float32)


class Body(BaseModel):
    from_version: int
    to_version: int
    embeddings: list[list[float]]


@app.post("/v1/transform")
def transform(body: Body) -> dict:
    matrix = np.asarray(body.embeddings, dtype=np.float32)
    return {"version": body.to_version, "embeddings": (matrix @ WEIGHT.T).tolist()}


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
