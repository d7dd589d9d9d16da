"""What every vendor hook shares: connection fields, timeouts, bounded retries of reads, redaction.

Vendor hooks (:mod:`~airflow_provider_portfolio.hooks.alpaca`,
:mod:`~airflow_provider_portfolio.hooks.alphavantage`, :mod:`~airflow_provider_portfolio.hooks.finnhub`)
subclass :class:`VendorHook`. The rules they inherit:

- every HTTP call carries a timeout (connection extra ``timeout``, default :attr:`VendorHook.default_timeout`);
- reads are retried a bounded number of times with exponential backoff on
  :class:`~airflow_provider_portfolio.exceptions.VendorUnavailableError` (timeouts, connection errors,
  HTTP 5xx) and on burst rate limits (waiting what the vendor asked, capped); a spent quota, a refused
  key or a bad request is raised at once. Writes (orders) never go through :meth:`VendorHook.read`;
- the connection's secrets are registered with Airflow's secrets masker when the connection is read,
  and every message the hook raises or logs passes :meth:`VendorHook.redact` first, which also removes
  keys that vendors carry in URLs (``apikey=``, ``token=``);
- the HTTP transport's own loggers (``urllib3.connectionpool`` logs every request line, query string
  and key included, at DEBUG) get a :class:`TransportLogRedactor` when a hook is first used, so keys stay
  out of those logs with or without Airflow's secrets masker (a notebook, a script, the CLI).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    PartialBarsError,
    PlanNotSupportedError,
    RateLimitError,
    UnknownSymbolError,
    VendorError,
    VendorUnavailableError,
)

if TYPE_CHECKING:
    import pandas as pd
    import requests

T = TypeVar("T")

log = logging.getLogger(__name__)

REDACTED = "***"
# Query parameters and headers that carry keys in vendor URLs and messages.
_KEY_PARAMS = re.compile(
    r"(?i)\b(apikey|api_key|token|key|secret|apca-api-key-id|apca-api-secret-key)(=|:\s*|\"\s*:\s*\"|'\s*:\s*')([^&\s\"',}]+)"
)
_MAX_BODY_SHOWN = 120


def redact_text(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret and every key-carrying URL parameter replaced by ``***``.

    :param text: anything; it is turned into a string first.
    :param secrets: exact values to hide (API keys, key ids). Values shorter than 4 characters are
        ignored, so that hiding them cannot mangle ordinary words.
    """
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    return _KEY_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)


#: The loggers the hooks' HTTP transport (``requests`` over ``urllib3``; alpaca-py's REST clients and
#: the hooks' own sessions alike) writes to, named where the records are made: a filter on a logger
#: applies only to records made on that very logger, not to those propagated from its children, so a
#: filter on ``urllib3`` alone would never see ``urllib3.connectionpool``'s request lines. Naming a
#: module not imported yet is fine: its ``getLogger(__name__)`` later returns the filtered logger.
TRANSPORT_LOGGERS: tuple[str, ...] = (
    "urllib3",
    "urllib3.connectionpool",  # DEBUG '<scheme>://<host>:<port> "GET /query?...&apikey=KEY HTTP/1.1" 200 n'
    "urllib3.connection",
    "urllib3.poolmanager",  # INFO "Redirecting <url> -> <url>"
    "urllib3.response",
    "urllib3.util.retry",  # DEBUG "Incremented Retry for (url='<url>')"
    "urllib3.contrib.pyopenssl",
    "urllib3.http2.connection",
    "requests",
)
_TRANSPORT_PACKAGES = ("urllib3", "requests")

_REDACTOR_LOCK = threading.Lock()
_REDACTOR: TransportLogRedactor | None = None


class TransportLogRedactor(logging.Filter):
    """A filter that rewrites a log record's text through :func:`redact_text` before any handler sees it.

    It hides every key a hook has registered (:meth:`add_secrets`) and any key-carrying parameter
    (``apikey=``, ``token=``, ...), in the message, its arguments and a logged traceback. It never drops a
    record and never raises: a record whose arguments do not fit its format is still logged (its
    message and arguments side by side, redacted) instead of failing in the handler, whose error report
    would print the raw arguments.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()  # replaced, never mutated: loggers read it from any thread

    @property
    def secrets(self) -> frozenset[str]:
        """The exact values hidden (besides the generic key parameters)."""
        return self._secrets

    def add_secrets(self, values: Iterable[object]) -> None:
        """Hide ``values`` (and their stripped forms) too; values shorter than 4 characters are ignored."""
        new = {v for s in values if isinstance(s, str) for v in (s, s.strip()) if len(v) >= 4}
        if not new <= self._secrets:
            with _REDACTOR_LOCK:
                self._secrets = self._secrets | new

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception:  # never break logging; never let an unredacted record through either
            record.msg, record.args = "<log record withheld: it could not be redacted>", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        secrets = self._secrets
        try:
            text, odd = record.getMessage(), False
        except Exception:  # arguments that do not fit the format: keep both, as text
            text, odd = f"{_safe_str(record.msg)} (arguments: {_safe_args(record.args)})", True
        redacted = redact_text(text, secrets)
        if odd or redacted != text:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            exc_text = redact_text(record.exc_text, secrets)
            if exc_text != record.exc_text:
                # Formatters print exc_text; handlers that render exc_info themselves must not see the raw one.
                record.exc_text, record.exc_info = exc_text, None
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, secrets)


def protect_transport_logs(secrets: Iterable[object] = ()) -> TransportLogRedactor:
    """Hide ``secrets`` and key parameters in the HTTP transport's logs; install the filter if needed.

    The one :class:`TransportLogRedactor` of the process goes on each of :data:`TRANSPORT_LOGGERS` and
    on every logger already made under ``urllib3`` and ``requests``, once per logger however many hooks
    call this; each call adds its hook's keys to the ones hidden. Cheap: hooks call it when first used,
    never at import.
    """
    global _REDACTOR
    with _REDACTOR_LOCK:
        if _REDACTOR is None:
            _REDACTOR = TransportLogRedactor()
        redactor = _REDACTOR
    redactor.add_secrets(secrets)
    existing = [
        name for name in list(logging.Logger.manager.loggerDict)
        if name.split(".", 1)[0] in _TRANSPORT_PACKAGES
    ]
    for name in dict.fromkeys([*TRANSPORT_LOGGERS, *existing]):
        logger = logging.getLogger(name)
        if redactor not in logger.filters:
            logger.addFilter(redactor)
    return redactor


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _safe_args(args: object) -> str:
    if isinstance(args, tuple):
        return ", ".join(_safe_str(a) for a in args)
    return _safe_str(args)


class VendorHook(BaseHook):
    """Base of the vendor hooks: a connection in, a configured HTTP session or SDK client out.

    Subclasses set ``conn_name_attr``, ``default_conn_name``, ``conn_type``, ``hook_name`` and store
    their conn id under ``conn_name_attr`` in ``__init__`` (which does no I/O).
    """

    #: Seconds an HTTP call may take when the connection sets no ``timeout``.
    default_timeout: float = 10.0
    #: Attempts of a read (the first call included).
    read_attempts: int = 3
    #: First backoff of a retried read, doubled each attempt.
    backoff_s: float = 1.0
    #: Longest single wait before retrying, whatever the vendor asked.
    max_wait_s: float = 30.0
    #: Display name of the vendor in messages.
    vendor: str = "vendor"
    #: Errors after which :meth:`bars_in_batches` asks nothing more: a rate limit (more calls only spend the
    #: quota), a refused key and an unavailable vendor (its retries already ran out) fail every later call too.
    STOPS_BATCHES: tuple[type[Exception], ...] = (RateLimitError, AuthenticationError, VendorUnavailableError)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Called to wait between retries; tests replace it.
        self.sleep: Callable[[float], None] = time.sleep

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Airflow < 3.2 renders connection forms only from these classmethods, and looks for them in
        # the hook class's own __dict__; they are built from the declarative ``conn-fields`` of
        # provider info, so both generations of Airflow show the same form. Airflow >= 3.2 reads the
        # declarative form and never calls them.
        super().__init_subclass__(**kwargs)
        if "conn_type" in cls.__dict__:
            cls.get_connection_form_widgets = classmethod(_legacy_form_widgets)  # type: ignore[assignment]
            cls.get_ui_field_behaviour = classmethod(_legacy_field_behaviour)  # type: ignore[assignment]

    # --- the connection -------------------------------------------------------------------------

    @property
    def conn_id(self) -> str:
        """The connection id this hook reads."""
        return getattr(self, self.conn_name_attr)

    @property
    def name(self) -> str:
        """The source name (the conn id): the failover chain's key and the bars' ``source`` column."""
        return self.conn_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.conn_id!r})"

    @cached_property
    def connection(self) -> Any:
        """The Airflow connection; its secrets are registered with the secrets masker on first read.

        :raises InvalidInputError: when the connection does not exist.
        """
        from airflow.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            raise InvalidInputError(
                f"connection {self.conn_id!r} does not exist: add a {self.conn_type!r} connection "
                f"(Admin -> Connections, or AIRFLOW_CONN_{self.conn_id.upper()})"
            ) from None
        for value in self.masked_values(conn):
            _mask(value)
        # Airflow's masker works only where Airflow configured logging: hide the keys at the source too.
        protect_transport_logs(_conn_secrets(conn))
        return conn

    def masked_values(self, conn: Any) -> list[object]:
        """The connection's values registered with Airflow's secrets masker: its password (the API key).

        A vendor whose login is also secret (Alpaca's key ID) overrides this.
        """
        return [conn.password]

    @property
    def secrets(self) -> list[str]:
        """Values never to show: the connection's password and login (read lazily)."""
        conn = self.__dict__.get("connection")
        if conn is None:
            return []
        return _conn_secrets(conn)

    def extra(self, name: str, default: Any = None) -> Any:
        """A field of the connection's extra, plain or with the UI's ``extra__<type>__`` prefix.

        Empty strings and ``None`` count as unset.
        """
        extras = self.connection.extra_dejson or {}
        for key in (name, f"extra__{self.conn_type}__{name}"):
            value = extras.get(key)
            if value is not None and value != "":
                return value
        return default

    def flag(self, name: str, default: bool) -> bool:
        """A boolean field of the extra (``true``/``false``, ``1``/``0``, ``yes``/``no`` accepted).

        :raises InvalidInputError: naming the connection and field for anything else.
        """
        value = self.extra(name, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise InvalidInputError(f"connection {self.conn_id!r}: {name} must be true or false, got {value!r}")

    @cached_property
    def timeout(self) -> float:
        """Seconds an HTTP call may take (extra ``timeout``; default :attr:`default_timeout`).

        :raises InvalidInputError: when the extra is not a number in (0, 300].
        """
        raw = self.extra("timeout", self.default_timeout)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 < value <= 300:
            raise InvalidInputError(
                f"connection {self.conn_id!r}: timeout must be a number of seconds in (0, 300], got {raw!r}"
            )
        return value

    def base_url(self, default: str, field: str = "base_url") -> str:
        """The vendor's base URL: extra ``field`` (for proxies and tests) or ``default``, no trailing slash.

        :raises InvalidInputError: when the extra is not an ``http(s)://host[/path]`` URL.
        """
        raw = self.extra(field, default)
        text = str(raw).strip()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise InvalidInputError(
                f"connection {self.conn_id!r}: {field} must look like https://host[/path], "
                f"got {self.redact(raw)!r}"
            )
        return text.rstrip("/")

    def api_key(self) -> str:
        """The connection's password, the API key.

        :raises AuthenticationError: when it is missing or blank.
        """
        key = self.connection.password
        if not isinstance(key, str) or not key.strip():
            raise AuthenticationError(
                f"no {self.vendor} API key: put it in the connection's password field", conn_id=self.conn_id
            )
        return key.strip()

    def redact(self, text: object) -> str:
        """``text`` with this connection's secrets and any key-carrying URL parameter hidden."""
        return redact_text(text, self.secrets)

    # --- HTTP -----------------------------------------------------------------------------------

    @cached_property
    def session(self) -> requests.Session:
        """One ``requests`` session per hook (no transport-level retries)."""
        import requests

        protect_transport_logs(self.secrets)  # before the first request; idempotent
        session = requests.Session()
        session.headers["User-Agent"] = f"airflow-provider-portfolio/{_version()}"
        return session

    def get_json(self, url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 what: str = "request") -> Any:
        """GET ``url`` once with the connection's timeout and return the decoded JSON body.

        Transport errors and HTTP errors become the provider's vendor errors through
        :meth:`check_response`; a body that is not JSON (an HTML error page from a proxy, say) is a
        :class:`VendorError` quoting its first characters, redacted.

        :param what: what is asked, for messages (``"daily bars of AAPL"``).
        """
        import requests

        try:
            response = self.session.get(url, params=params, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise VendorUnavailableError(
                f"{self.vendor} did not answer {what} within {self.timeout:g} s", conn_id=self.conn_id
            ) from None
        except requests.RequestException as err:
            raise VendorUnavailableError(
                f"{self.vendor} could not be reached for {what}: {type(err).__name__}: {self.redact(err)}",
                conn_id=self.conn_id,
            ) from None
        self.check_response(response, what)
        try:
            return response.json()
        except ValueError:
            raise VendorError(
                f"{self.vendor} answered {what} with {response.headers.get('Content-Type', 'no content type')} "
                f"instead of JSON: {self.redact(shorten(response.text))!r}",
                conn_id=self.conn_id,
                status_code=response.status_code,
            ) from None

    def check_response(self, response: requests.Response, what: str) -> None:
        """Raise the vendor error an HTTP status means; return quietly on 2xx.

        Subclasses refine this for their vendor's own statuses and bodies and call it for the rest.
        """
        status = response.status_code
        if status < 400:
            return
        detail = self.redact(shorten(response.text))
        message = f"{self.vendor} answered {what} with HTTP {status}: {detail}"
        kwargs = {"conn_id": self.conn_id, "status_code": status}
        if status == 429:
            raise RateLimitError(message, kind=RateLimitError.BURST, retry_after=_retry_after(response), **kwargs)
        if status == 401:
            raise AuthenticationError(message, **kwargs)
        if status == 403:
            raise PlanNotSupportedError(message, **kwargs)
        if status == 404:
            raise UnknownSymbolError(message, **kwargs)
        if status >= 500:
            raise VendorUnavailableError(message, **kwargs)
        raise VendorError(message, **kwargs)

    def read(self, call: Callable[[], T], what: str) -> T:
        """Run an idempotent read with bounded retries.

        Retried: :class:`VendorUnavailableError` (backoff :attr:`backoff_s`, doubling) and burst
        :class:`RateLimitError` (the vendor's ``retry_after`` or the backoff, capped at
        :attr:`max_wait_s`), up to :attr:`read_attempts` attempts in all. Anything else is raised
        at once; the last error is raised when attempts run out.
        """
        wait = self.backoff_s
        for attempt in range(1, self.read_attempts + 1):
            try:
                return call()
            except RateLimitError as err:
                if not err.is_burst or attempt == self.read_attempts:
                    raise
                pause = min(err.retry_after if err.retry_after is not None else wait, self.max_wait_s)
                reason = "burst rate limit"
            except VendorUnavailableError:
                if attempt == self.read_attempts:
                    raise
                pause = min(wait, self.max_wait_s)
                reason = "vendor unavailable"
            log.warning(
                "%s: %s on %s (attempt %d of %d); retrying in %.1f s",
                self.conn_id, reason, what, attempt, self.read_attempts, pause,
            )
            self.sleep(pause)
            wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    # --- many symbols ---------------------------------------------------------------------------

    def bars_symbol_by_symbol(self, symbols: str | Sequence[str], start: Any, end: Any,
                              timeframe: str) -> pd.DataFrame:
        """The :class:`~airflow_provider_portfolio.market.sources.BarSource` call of a vendor that serves one
        symbol a call (its ``bars_of(symbol, start, end, timeframe)``): a list is asked symbol by symbol through
        :meth:`bars_in_batches`, so a symbol that fails fails alone, and a rate limit (or a refused key, or the
        vendor unavailable) stops the loop, the remaining symbols failing with that reason, no more calls spent.

        :param symbols: one ticker or pair, a list, or a comma-separated string (checked before any call).
        :raises PartialBarsError: when some symbols were served and others failed.
        :raises VendorError: (and subclasses) when every symbol failed for one reason (one symbol asked).
        """
        from airflow_provider_portfolio.market.params import validate_symbols

        names = validate_symbols(symbols)
        bars_of = getattr(self, "bars_of")
        return self.bars_in_batches([[name] for name in names], lambda batch: bars_of(batch[0], start, end, timeframe))

    def bars_in_batches(self, batches: Sequence[Sequence[str]],
                        fetch: Callable[[list[str]], pd.DataFrame]) -> pd.DataFrame:
        """Bars of many symbols, one ``fetch`` per batch (one symbol, or one multi-symbol request), as one frame.

        A batch whose ``fetch`` raises a :class:`VendorError` fails its symbols and the next batch is asked;
        after an error of :attr:`STOPS_BATCHES` (a rate limit, a refused key, an unavailable vendor) nothing
        more is asked: the remaining symbols fail with that same reason. Other errors
        (:class:`InvalidInputError`, a bug) are raised at once.

        :param batches: the symbols, in batches.
        :param fetch: a batch's canonical bar frame (empty when the range holds no bars).
        :return: the canonical bar frame of every symbol served.
        :raises VendorError: the error itself when every symbol failed for that one error (one symbol asked,
            or the first call stopped the loop).
        :raises PartialBarsError: when some symbols failed otherwise (with the frame of the others and why
            each failed, ``"<ErrorType>: message"``).
        """
        import pandas as pd

        from airflow_provider_portfolio.market.bars import empty_bars, to_bar_frame

        frames: list[pd.DataFrame] = []
        failures: dict[str, str] = {}
        errors: list[VendorError] = []
        stop: str | None = None
        skipped = 0
        for batch in batches:
            symbols = list(batch)
            if stop is not None:
                if not skipped:
                    log.warning("%s: not asking the remaining symbols after %s", self.conn_id, stop)
                skipped += len(symbols)
                failures.update(dict.fromkeys(symbols, stop))
                continue
            try:
                frame = fetch(symbols)
            except VendorError as err:
                errors.append(err)
                reason = f"{type(err).__name__}: {err}"
                failures.update(dict.fromkeys(symbols, reason))
                if isinstance(err, self.STOPS_BATCHES):
                    stop = reason
                continue
            if len(frame):
                frames.append(frame)
        frame = to_bar_frame(pd.concat(frames, ignore_index=True)) if frames else empty_bars()
        if failures:
            asked = {s for batch in batches for s in batch}
            if len(errors) == 1 and set(failures) == asked:
                raise errors[0]
            raise PartialBarsError(frame, failures)
        return frame

    # --- Airflow's Test button ------------------------------------------------------------------

    def probe(self) -> str:
        """One cheap authenticated call; return a short description of the answer. Subclasses implement."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's Test Connection: one cheap authenticated call.

        :return: (success, message); the message never holds a secret.
        """
        try:
            return True, self.probe()
        except Exception as err:  # the Test button shows any failure as text
            return False, self.redact(f"{type(err).__name__}: {err}")


def connection_type_info(conn_type: str) -> dict[str, Any]:
    """The provider-info entry of ``conn_type`` (its declarative form)."""
    from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES

    for entry in CONNECTION_TYPES:
        if entry["connection-type"] == conn_type:
            return entry
    raise KeyError(conn_type)


def _legacy_field_behaviour(cls: type[VendorHook]) -> dict[str, Any]:
    behaviour = connection_type_info(cls.conn_type)["ui-field-behaviour"]
    return {
        "hidden_fields": list(behaviour["hidden-fields"]),
        "relabeling": dict(behaviour["relabeling"]),
        "placeholders": dict(behaviour["placeholders"]),
    }


def _legacy_form_widgets(cls: type[VendorHook]) -> dict[str, Any]:
    # The names Airflow 3.1's api-server substitutes when Flask-AppBuilder is not installed.
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, StringField
    from wtforms.validators import Optional, any_of

    widgets: dict[str, Any] = {}
    for name, field in connection_type_info(cls.conn_type)["conn-fields"].items():
        schema = field["schema"]
        label, description, default = lazy_gettext(field["label"]), field.get("description", ""), schema.get("default")
        if "boolean" in schema["type"]:
            widgets[name] = BooleanField(label, description=description, default=default)
            continue
        validators = [Optional()]
        if "enum" in schema:
            validators.append(any_of(schema["enum"]))
        widgets[name] = StringField(
            label,
            widget=BS3TextFieldWidget(),
            validators=validators,
            description=description,
            default=None if default is None else str(default),
        )
    return widgets


def _conn_secrets(conn: Any) -> list[str]:
    return [v for v in (conn.password, conn.login) if isinstance(v, str) and v]


def _mask(value: object) -> None:
    if isinstance(value, str) and value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)


def shorten(text: object, limit: int = _MAX_BODY_SHOWN) -> str:
    """``text`` on one line, cut to ``limit`` characters (for quoting vendor bodies in messages)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _version() -> str:
    from airflow_provider_portfolio import __version__

    return __version__
