"""Flag columns of study frames (no torch: the report reads them too)."""

from __future__ import annotations

import pandas as pd


def as_bool(series: pd.Series) -> pd.Series:
    """A flag column as floats 1/0/NaN whether the CSV stored it as bool, 0/1 or ``True``/``False``."""
    mapping = {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}  # 1 == True, 0 == False as keys
    return series.map(lambda v: mapping.get(v, float("nan")) if not isinstance(v, float) else v).astype(float)
