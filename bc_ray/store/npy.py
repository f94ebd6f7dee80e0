"""Matrices as .npy files (the refresh's layer caches) without copies of the matrix.

`np.save` into a BytesIO and `getvalue()` hold the matrix twice more, and `np.load` from bytes
copies it again: at 10M edges a layer's user rows are 0.2 GB. Written as (header, the rows where
they are) and read as a view of the file's bytes, a cache costs no more than the bytes read.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from bc_ray.exceptions import CorruptFileError


def npy_parts(matrix: np.ndarray) -> list[bytes | memoryview]:
    """The .npy file of `matrix` as (header, data) to write one after the other (`put_parts`);
    the data is the matrix's own memory when it is C-contiguous already."""
    matrix = np.ascontiguousarray(matrix)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(matrix))
    return [header.getvalue(), memoryview(matrix.reshape(-1).view(np.uint8))]


def npy_header(stream: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy file `stream` is at the start of, left at its data; a C-order
    numeric array, else `CorruptFileError`."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        shape, fortran, dtype = readers[np.lib.format.read_magic(stream)](stream)
    except (ValueError, KeyError) as exc:
        raise CorruptFileError(f"cannot read matrix file {name}: {exc}") from exc
    if fortran or dtype.hasobject:
        raise CorruptFileError(f"cannot read matrix file {name}: not a C-order numeric array")
    return shape, dtype


def npy_matrix(data: bytes, name: str) -> np.ndarray:
    """A read-only view of the matrix in an .npy file's bytes (C order, no objects)."""
    stream = io.BytesIO(data)
    shape, dtype = npy_header(stream, name)
    count = int(np.prod(shape, dtype=np.int64))
    try:
        return np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell()).reshape(shape)
    except ValueError as exc:
        raise CorruptFileError(f"cannot read matrix file {name}: {exc}") from exc
