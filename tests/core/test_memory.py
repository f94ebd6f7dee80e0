"""A stage's peak memory, which its end does not show: PeakWatch samples it in between."""

import time

import numpy as np
import pytest

from bc_ray.memory import PeakWatch, private_bytes


@pytest.mark.skipif(private_bytes() == 0, reason="no /proc/self/status here")
def test_a_freed_transient_shows_in_the_peak_and_not_after():
    watch = PeakWatch(interval=0.01)
    try:
        before = watch.take()
        transient = np.ones(64 << 20, dtype=np.uint8)  # 64 MB, touched
        time.sleep(0.2)
        del transient
        now = private_bytes()
        peak = watch.take()
        assert peak >= before + (48 << 20) and peak >= now + (48 << 20)
        assert watch.take() < peak - (48 << 20)  # the next stage starts from now
    finally:
        watch.close()
