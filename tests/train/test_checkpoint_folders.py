"""A worker killed within its report leaves its checkpoint folder (the model, gigabytes at
scale); the next start on that node removes it, and never a live process's folder."""

import os
import socket
import subprocess
import sys
import tempfile

from bc_ray.train.loop import CHECKPOINT_PREFIX, checkpoint_folder, remove_orphaned_checkpoints


def test_orphaned_checkpoint_folders_go_and_live_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    host = socket.gethostname()
    orphan = tmp_path / f"{CHECKPOINT_PREFIX}{dead_pid}@{host}-x1y2"
    made = checkpoint_folder()  # this process's: alive
    elsewhere = tmp_path / f"{CHECKPOINT_PREFIX}{dead_pid}@not-{host}-a1b2"  # its own pids
    unnamed = tmp_path / f"{CHECKPOINT_PREFIX}q8w9e7"  # an older folder: whose, unknown
    other = tmp_path / f"not-{CHECKPOINT_PREFIX}{dead_pid}@{host}-z"
    for folder in (orphan, elsewhere, unnamed, other):
        folder.mkdir()
        (folder / "worker-00000.pt").write_bytes(b"model")
    assert os.path.dirname(made) == str(tmp_path)
    assert remove_orphaned_checkpoints() == 1
    assert not orphan.exists()
    assert all(os.path.exists(f) for f in (made, elsewhere, unnamed, other))
    assert remove_orphaned_checkpoints() == 0
