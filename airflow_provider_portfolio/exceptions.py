"""Errors raised by the provider, in one module.

Plain Python: importing this module imports nothing heavy and never Airflow, so domain packages raise
these errors too. Messages never carry secrets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class PortfolioError(Exception):
    """Base class of every error the provider raises on purpose."""


class InvalidInputError(PortfolioError, ValueError):
    """A parameter is wrong (unknown symbol, start after end, not a list...). Raised before any write."""


class DagConfigError(InvalidInputError):
    """A DAG factory's YAML file is wrong (:mod:`airflow_provider_portfolio.dag_factory`).

    Each problem names the file, its line and column, and the field (``desks[1].trading.weights.technical``).

    :param file: the YAML file, as given.
    :param problems: ``(field, line, column, message)`` for each problem in file order; ``field`` is ``""`` for a
        YAML syntax error; lines and columns count from 1.
    """

    def __init__(self, file: str, problems: Sequence[tuple[str, int, int, str]]):
        self.file = file
        self.problems = list(problems)
        lines = [f"{file}, line {line}, column {column}: {field + ': ' if field else ''}{message}"
                 for field, line, column, message in self.problems]
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} problems in {file}:\n" + "\n".join(lines))


class DataQualityError(PortfolioError):
    """A symbol's batch of bars failed the quality gate and was rejected whole.

    :param symbol: the symbol whose batch was rejected.
    :param rule: the rule that failed (for example ``high_below_low``).
    :param rows: a short description of the offending rows (timestamps and values).
    :param count: how many rows broke the rule.
    """

    def __init__(self, symbol: str, rule: str, rows: Sequence[str] | str, count: int | None = None):
        self.symbol = symbol
        self.rule = rule
        self.rows = [rows] if isinstance(rows, str) else list(rows)
        self.count = len(self.rows) if count is None else count
        shown = "; ".join(self.rows[:5])
        more = f" (+{self.count - 5} more)" if self.count > 5 else ""
        super().__init__(f"{symbol}: rule {rule!r} failed on {self.count} row(s): {shown}{more}")


class SourceError(PortfolioError):
    """A market-data source could not serve a request."""


class AllSourcesFailedError(SourceError):
    """Every source of a failover chain failed.

    :param symbol: the symbol requested.
    :param failures: source name -> why it failed, in the order tried.
    """

    def __init__(self, symbol: str, failures: Mapping[str, str]):
        self.symbol = symbol
        self.failures = dict(failures)
        detail = "; ".join(f"{name}: {why}" for name, why in self.failures.items()) or "no sources"
        super().__init__(f"no source could serve {symbol}: {detail}")


class PartialBarsError(SourceError):
    """A source asked for many symbols served some and failed the others.

    :param frame: the canonical bar frame of the symbols it served.
    :param failures: symbol -> why the source could not serve it.
    """

    def __init__(self, frame: object, failures: Mapping[str, str]):
        self.frame = frame
        self.failures = dict(failures)
        detail = "; ".join(f"{symbol}: {why}" for symbol, why in list(self.failures.items())[:5])
        more = f" (+{len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} symbol(s) not served: {detail}{more}")


class StoreError(PortfolioError):
    """The portfolio store cannot be reached, is corrupt, locked, or has an unknown schema."""


class AccountLockedError(StoreError):
    """Another trading cycle held the account's lock longer than this one would wait.

    :param account: the ledger account.
    :param waited_s: how long this cycle waited, seconds.
    :param holder: what is known of the holder (its owner label, process, since when), or ``""``.
    """

    def __init__(self, account: str, waited_s: float, holder: str = ""):
        self.account = account
        self.waited_s = waited_s
        self.holder = holder
        held = f" (held by {holder})" if holder else ""
        super().__init__(f"account {account!r} is locked by another trading cycle{held}; gave up after "
                         f"{waited_s:g} s. Nothing was decided or sent: retry when that cycle has finished")


class VendorError(SourceError):
    """A vendor (Alpaca, Alpha Vantage, Finnhub) refused or failed a call.

    Messages name the connection and never the key: hooks redact every URL and vendor text first.

    :param message: what went wrong, already redacted.
    :param conn_id: the Airflow connection the call used.
    :param status_code: the HTTP status, when there was a response.
    """

    def __init__(self, message: str, *, conn_id: str | None = None, status_code: int | None = None):
        self.conn_id = conn_id
        self.status_code = status_code
        prefix = f"connection {conn_id!r}: " if conn_id else ""
        super().__init__(prefix + message)


class VendorUnavailableError(VendorError):
    """The vendor did not answer usefully in time: timeout, connection error, HTTP 5xx. Reads retry it."""


class AuthenticationError(VendorError):
    """The vendor refused the key (missing, empty, wrong, or without access to the endpoint)."""


class PlanNotSupportedError(VendorError):
    """The endpoint is not available on the connection's plan (a premium endpoint on a free key)."""


class UnknownSymbolError(VendorError):
    """The vendor does not know the symbol (each vendor says so its own way)."""


class RateLimitError(VendorError):
    """The vendor's rate limit was hit.

    :param kind: ``"burst"`` (a per-second or per-minute limit: a short wait helps) or ``"quota"``
        (the daily or plan quota is spent: nothing helps until it resets).
    :param retry_after: seconds the vendor asked to wait, when it said.
    """

    BURST = "burst"
    QUOTA = "quota"

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retry_after: float | None = None,
        conn_id: str | None = None,
        status_code: int | None = None,
    ):
        if kind not in (self.BURST, self.QUOTA):
            raise ValueError(f"kind must be 'burst' or 'quota', got {kind!r}")
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(message, conn_id=conn_id, status_code=status_code)

    @property
    def is_burst(self) -> bool:
        """Whether a short wait is worth it."""
        return self.kind == self.BURST
