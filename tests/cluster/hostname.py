"""``[core] hostname_callable`` of the cluster's workers: each worker's name, so a task instance's ``hostname``
says which worker ran it (both workers share one machine)."""

from __future__ import annotations

import os
import socket


def worker_name() -> str:
    """``$PORTFOLIO_WORKER_NAME`` (set per worker by the cluster), else the machine's name."""
    return os.environ.get("PORTFOLIO_WORKER_NAME") or socket.getfqdn()
