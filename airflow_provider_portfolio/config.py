"""The one place that reads the provider's ``[portfolio]`` configuration section.

Options are declared (with descriptions and defaults) in :mod:`get_provider_info`; this module
reads them through Airflow's config (``airflow.cfg`` or ``AIRFLOW__PORTFOLIO__<OPTION>``), falling
back to the declared default. Airflow is imported inside the function, so importing this module is
cheap and domain code never needs it.
"""

from __future__ import annotations

from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE

SECTION = "portfolio"

#: Option name -> (default, description). get_provider_info builds the declared section from this.
OPTIONS: dict[str, tuple[str, str]] = {
    "store_conn_id": (
        "portfolio_store_default",
        "Connection id of the portfolio store (a sqlite or postgres connection). When no such "
        "connection exists, the store is a SQLite file under $AIRFLOW_HOME/portfolio/.",
    ),
    "default_exchange": (
        DEFAULT_EXCHANGE,
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
    "synthetic_dir": (
        "",
        "Folder of the synthetic datasets that portfolio_synthetic_refresh writes (one subfolder per dataset id "
        "and a 'latest' file). Empty: $AIRFLOW_HOME/portfolio/synthetic/, beside the embedded store; a relative "
        "path is taken from $AIRFLOW_HOME/portfolio/.",
    ),
    "device": (
        "auto",
        "Array device for forecasting: 'auto' (CuPy when a GPU is visible), 'cuda' or 'cpu'.",
    ),
    "gpu_pool": (
        "gpu_pool",
        "Airflow pool for GPU-capable forecasting tasks, one slot per GPU (python -m "
        "airflow_provider_portfolio setup creates gpu_pool). Where the pool does not exist, the "
        "provider's cluster policy runs the task in default_pool, so a copied DAG never waits on it.",
    ),
    "gpu_queue": (
        "default",
        "Executor queue for GPU-capable forecasting tasks (Celery/Kubernetes GPU workers).",
    ),
    "store_lock_timeout": (
        "30",
        "Seconds a store statement waits for a lock another session holds (a row or table another "
        "writer has locked) before it fails with a StoreError that says so: PostgreSQL's lock_timeout, "
        "and the busy timeout of a SQLite store. 0 waits without limit. A postgres store connection's "
        "extra 'lock_timeout' overrides it.",
    ),
    "store_statement_timeout": (
        "300",
        "Seconds one PostgreSQL store statement may run, lock waits included, before the server "
        "cancels it (statement_timeout). 0 means no limit. Extra 'statement_timeout' overrides it.",
    ),
    "store_connect_timeout": (
        "10",
        "Seconds opening a PostgreSQL store connection may take (libpq connect_timeout; > 0). Extra "
        "'connect_timeout' overrides it.",
    ),
    "store_keepalives_idle": (
        "60",
        "Seconds a PostgreSQL store connection may sit idle before TCP keepalive probes start (then every "
        "10 s; 5 unanswered probes drop it), so a dead server or network never leaves a task waiting "
        "forever. 0 turns keepalives off. Extra 'keepalives_idle' overrides it.",
    ),
    "pool_fallback": (
        "True",
        "Run a task whose provider pool (gpu_pool, database_pool, api_pool, trading_pool) does not exist in "
        "default_pool instead of leaving it unscheduled (a cluster policy). To call it, Airflow creates task "
        "instances one by one, as it does for any airflow_local_settings hook (on Airflow 3.3 a task's display name "
        "is then set only when it runs). False: no fallback; create the pools with python -m "
        "airflow_provider_portfolio setup.",
    ),
    "deadline_alerts": (
        "False",
        "Attach the example DAGs' deadline alerts (daily ETL done by 06:00 New York, an auto-trader cycle within 5 "
        "minutes, monitoring within 10), which notify when missed. Off by default: `airflow dags test` of a DAG "
        "with a deadline fails on Airflow 3.1.8 and 3.3.2 (apache/airflow#58949, #73428) although the scheduler "
        "runs it well; turn it on where the scheduler runs the DAGs.",
    ),
    "notify_smtp_conn_id": (
        "",
        "SMTP connection (Airflow's SMTP provider, type smtp) that notifications (task failures, RED health, "
        "missed deadlines) are mailed through, to notify_email_to; the sender is the connection's from_email, "
        "else [email] from_email. Empty, or a connection that does not exist: no mail.",
    ),
    "notify_email_to": (
        "",
        "Comma-separated recipients of the notification mails (with notify_smtp_conn_id).",
    ),
    "notify_slack_conn_id": (
        "",
        "Slack incoming-webhook connection (type slackwebhook; needs the 'slack' extra) that notifications are "
        "posted to. With neither channel configured, notifications are logged at WARNING.",
    ),
    "backup_dir": (
        "",
        "Folder of the SQLite store's backups made by the housekeeping job (example DAG portfolio_housekeeping); "
        "empty: <store file>.backups beside the store file. A relative path is taken from the store's folder. A "
        "PostgreSQL store is not copied by the provider: use pg_dump or the server's own backups.",
    ),
}

#: Declared type of the options that are not strings (``get_provider_info`` declares the rest as strings).
OPTION_TYPES: dict[str, str] = {
    "store_lock_timeout": "float",
    "store_statement_timeout": "float",
    "store_connect_timeout": "float",
    "store_keepalives_idle": "float",
    "pool_fallback": "boolean",
    "deadline_alerts": "boolean",
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


def get_flag(name: str) -> bool:
    """``[portfolio] <name>``, a boolean option, as Airflow spells booleans (``True``/``False``, ``1``/``0``...).

    :raises InvalidInputError: naming the option, for another value.
    """
    from airflow_provider_portfolio.exceptions import InvalidInputError

    value = get_option(name).lower()
    if value in ("true", "t", "1", "yes", "on"):
        return True
    if value in ("false", "f", "0", "no", "off"):
        return False
    raise InvalidInputError(f"[{SECTION}] {name} must be True or False, got {value!r}")


def execution_mode() -> str:
    """``[portfolio] execution_mode``, checked.

    :raises ValueError: when it is not one of :data:`EXECUTION_MODES`.
    """
    mode = get_option("execution_mode").lower()
    if mode not in EXECUTION_MODES:
        raise ValueError(f"[portfolio] execution_mode must be one of {EXECUTION_MODES}, got {mode!r}")
    return mode


def parse_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A number of seconds given as text or a number: finite and >= 0 (> 0 when ``positive``).

    :param value: the value as configured.
    :param what: how the message names the setting (``[portfolio] store_lock_timeout``).
    :param positive: refuse 0.
    :raises InvalidInputError: naming ``what``, for anything else.
    """
    import math

    from airflow_provider_portfolio.exceptions import InvalidInputError

    try:
        seconds = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise InvalidInputError(f"{what} must be a number of seconds {'>' if positive else '>='} 0, got {value!r}")
    return seconds


def get_seconds(name: str, *, positive: bool = False) -> float:
    """``[portfolio] <name>`` as seconds (see :func:`parse_seconds`).

    :param name: a timeout option of :data:`OPTIONS`.
    :param positive: refuse 0.
    :raises InvalidInputError: naming the option, for a value that is not such a number.
    """
    return parse_seconds(get_option(name), f"[{SECTION}] {name}", positive=positive)
