"""Helpers of the desk's tests."""

from __future__ import annotations

from datetime import datetime

import pandas as pd


def ny(day: str, hour: int, minute: int = 0) -> datetime:
    """``day`` at ``hour:minute`` New York time, as UTC."""
    return pd.Timestamp(f"{day} {hour:02d}:{minute:02d}").tz_localize("America/New_York").tz_convert("UTC") \
        .to_pydatetime()
