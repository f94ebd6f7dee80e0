import io

import numpy as np
import pytest

from bc_ray.exceptions import CorruptFileError
from bc_ray.store.npy import npy_matrix, npy_parts
from bc_ray.store.store import Store


def test_a_matrix_written_in_parts_is_the_npy_file_numpy_reads(store_uri):
    matrix = np.random.default_rng(0).random((500, 16), dtype=np.float32)
    store = Store(store_uri)
    record = store.put_parts("cache/layer1.npy", npy_parts(matrix[::2]))  # strided: C order
    data = store.get(record)  # size and sha256 match the file
    assert np.array_equal(np.load(io.BytesIO(data)), matrix[::2])
    view = npy_matrix(data, "layer1.npy")
    assert np.array_equal(view, matrix[::2]) and not view.flags.writeable
    theirs = io.BytesIO()
    np.save(theirs, matrix)
    assert np.array_equal(npy_matrix(theirs.getvalue(), "theirs.npy"), matrix)
    empty = store.put_parts("cache/empty.npy", npy_parts(np.zeros((0, 8), np.float32)))
    assert npy_matrix(store.get(empty), "empty.npy").shape == (0, 8)


def test_a_mapped_file_is_put_as_it_is(store_uri, tmp_path):
    """A sharded bump registers M_k's file from its mapped pages (a memoryview), which the S3
    client does not take as one body: it is streamed instead."""
    import mmap

    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(1).bytes(3 << 20))
    store = Store(store_uri)
    with (open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
          memoryview(mapped) as view):
        record = store.put("versions/model.pt", view)
    assert record.size == 3 << 20 and store.get(record) == path.read_bytes()


@pytest.mark.parametrize("cut", [5, 60, 1000])
def test_a_truncated_npy_file_is_a_corrupt_file_named(cut):
    matrix = np.ones((100, 4), np.float32)
    data = b"".join(bytes(part) for part in npy_parts(matrix))[:cut]
    with pytest.raises(CorruptFileError, match="layer1.npy"):
        npy_matrix(data, "layer1.npy")
