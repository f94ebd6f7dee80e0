"""Entry point for `ray job submit --working-dir . -- python jobs/refresh.py --store URI ...`.

The flags are exactly `bc-ray refresh`'s (see `python jobs/refresh.py --help`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted working dir

from bc_ray.cli.main import run  # noqa: E402

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "refresh", *sys.argv[1:]]
    run()
