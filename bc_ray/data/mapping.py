"""Which input columns hold what, and how a batch's values are read: the column mapping.

Kept free of polars so the command line and the landing settings can build one without loading
it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import DataError

TIME_UNITS = ("s", "ms")


@dataclass(frozen=True)
class ColumnMapping:
    """Which input columns hold what (`--user-col`, `--item-col`, `--time-col`, ...), and how the
    batch is read (`--time-unit`, `--input-format`, `--allow-old-times`)."""

    user_col: str
    item_col: str
    time_col: str
    rating_col: str | None = None
    time_unit: str = "s"
    input_format: str | None = None
    allow_old_times: bool = False

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise DataError(f"--time-unit must be one of {TIME_UNITS}, got {self.time_unit!r}")
        for name in ("user_col", "item_col", "time_col"):
            if not getattr(self, name):
                raise DataError(f"--{name.replace('_', '-')} is required")
        if not isinstance(self.allow_old_times, bool):
            raise DataError("allow_old_times must be true or false, got "
                            f"{self.allow_old_times!r}")

    def key(self, entity: str) -> str:
        return self.user_col if entity == "user" else self.item_col
