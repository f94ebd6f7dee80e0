"""Entry point for `ray job submit --working-dir . -- python jobs/publish.py --store URI ...`.

The flags are exactly `bc-ray publish`'s (see `python jobs/publish.py --help`); the scheduler's
`--publish-from` submits it once per new folder.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted working dir

from bc_ray.cli.main import run  # noqa: E402

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "publish", *sys.argv[1:]]
    run()
