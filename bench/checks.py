"""What every benchmark here shares: answer checks that count failures, and a timer.

A bench script prints each check as it goes and exits with :func:`exit_status` (1 when any failed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/<name>.py` from anywhere
    sys.path.insert(0, str(REPO))

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    """Print one answer check and remember it when it failed."""
    print(f"  [{'PASS' if ok else 'FAIL'}] {what}")
    if not ok:
        FAILURES.append(what)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(seconds per call, last result) of ``repeat`` calls of ``fn``."""
    start = time.perf_counter()
    result = None
    for _ in range(repeat):
        result = fn()
    return (time.perf_counter() - start) / repeat, result


def exit_status() -> int:
    """Print the verdict of all checks; 0 when every one passed, else 1."""
    if FAILURES:
        print(f"FAIL: {len(FAILURES)} check(s) failed: " + "; ".join(FAILURES))
        return 1
    print("PASS: all checks passed")
    return 0
