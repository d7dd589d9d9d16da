"""The one place that reads the provider's ``[portfolio]`` configuration section.

Options are declared (with descriptions and defaults) in :mod:`get_provider_info`; this module
reads them through Airflow's config (``airflow.cfg`` or ``AIRFLOW__PORTFOLIO__<OPTION>``), falling
back to the declared default. Airflow is imported inside the function, so importing this module is
cheap and domain code never needs it.
"""

from __future__ import annotations

SECTION = "portfolio"

#: Option name -> (default, description). get_provider_info builds the declared section from this.
OPTIONS: dict[str, tuple[str, str]] = {
    "store_conn_id": (
        "portfolio_store_default",
        "Connection id of the portfolio store (a sqlite or postgres connection). When no such "
        "connection exists, the store is a SQLite file under $AIRFLOW_HOME/portfolio/.",
    ),
    "default_exchange": (
        "XNYS",
        "Exchange calendar for equities (any pandas-market-calendars name). Crypto pairs such as "
        "BTC/USD always use the 24/7 calendar.",
    ),
    "execution_mode": (
        "synthetic",
        "'synthetic': jobs with no data sources given run on the built-in synthetic market. "
        "'live': the synthetic market is refused, so a production deployment never loads or trades "
        "on invented prices by accident; sources must name vendor connections.",
    ),
    "synthetic_seed": (
        "0",
        "Seed of the synthetic market. Bars are a pure function of (seed, symbol, bar).",
    ),
    "device": (
        "auto",
        "Array device for forecasting: 'auto' (CuPy when a GPU is visible), 'cuda' or 'cpu'.",
    ),
    "gpu_pool": (
        "default_pool",
        "Airflow pool for GPU-capable forecasting tasks. The default pool always exists, so a "
        "copied DAG never waits on a missing pool; create one slot per GPU and name it here.",
    ),
    "gpu_queue": (
        "default",
        "Executor queue for GPU-capable forecasting tasks (Celery/Kubernetes GPU workers).",
    ),
}

EXECUTION_MODES = ("synthetic", "live")


def get_option(name: str) -> str:
    """Read ``[portfolio] <name>``, with the declared default as fallback.

    :param name: an option of :data:`OPTIONS`.
    :raises KeyError: for an option the provider does not declare.
    """
    default, _ = OPTIONS[name]
    from airflow.configuration import conf

    value = conf.get(SECTION, name, fallback=default)
    return default if value is None or str(value).strip() == "" else str(value).strip()


def execution_mode() -> str:
    """``[portfolio] execution_mode``, checked.

    :raises ValueError: when it is not one of :data:`EXECUTION_MODES`.
    """
    mode = get_option("execution_mode").lower()
    if mode not in EXECUTION_MODES:
        raise ValueError(f"[portfolio] execution_mode must be one of {EXECUTION_MODES}, got {mode!r}")
    return mode
