"""Keys never reach third-party transport logs, with or without Airflow's secrets masker.

Inside a task Airflow's masker hides registered secrets; in a notebook, a script or the CLI nothing
does, and ``urllib3.connectionpool`` logs every request line at DEBUG, query string included
(``GET /query?function=...&apikey=KEY``). The hooks install a redacting filter on the transport's
loggers when first used. These tests capture with plain ``logging`` handlers (no masker on them) and
send real requests through urllib3 to a local HTTP server: requests-mock would bypass urllib3.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_provider_portfolio.hooks.alphavantage import AlphaVantageHook
from airflow_provider_portfolio.hooks.finnhub import FinnhubHook
from airflow_provider_portfolio.hooks.vendor import REDACTED, redact_text
from tests.vendorkeys import ALPHAVANTAGE_KEY, FINNHUB_KEY

REPO = Path(__file__).resolve().parents[2]
TRANSPORT_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.util.retry", "requests")

QUOTE_AV = {"Global Quote": {"01. symbol": "IBM", "05. price": "170.01", "07. latest trading day": "2024-06-03"}}
QUOTE_FH = {"c": 194.03, "d": 1.0, "dp": 0.5, "h": 195.0, "l": 193.0, "o": 193.5, "pc": 193.03, "t": 1717430400}


class _Vendor(BaseHTTPRequestHandler):
    """Answers Alpha Vantage's ``/query`` and Finnhub's ``/quote`` with fixed JSON; logs nothing itself."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps(QUOTE_AV if self.path.startswith("/query") else QUOTE_FH).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the server would print the URL to stderr
        pass


@pytest.fixture
def vendor_url() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: a real HTTP server in a thread, so requests go through urllib3."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Vendor)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Lines(logging.Handler):
    """A plain handler (no secrets masker) keeping every formatted line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # as every stdlib handler does: report on stderr, keep the program running
            self.handleError(record)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def debug_log() -> Iterator[_Lines]:
    """DEBUG logging as a notebook's ``logging.basicConfig(level=logging.DEBUG)`` sets it: a handler on root.

    The transport loggers' levels and ``disabled`` flags are restored afterwards.
    """
    root = logging.getLogger()
    saved = [(root, root.level, root.disabled)] + [
        (lg, lg.level, lg.disabled) for lg in map(logging.getLogger, TRANSPORT_LOGGERS)
    ]
    handler = _Lines()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for logger in map(logging.getLogger, TRANSPORT_LOGGERS):
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


@pytest.fixture
def av_hook(add_connection, vendor_url) -> AlphaVantageHook:
    add_connection("av_transport", "alphavantage", password=ALPHAVANTAGE_KEY, base_url=vendor_url)
    return AlphaVantageHook("av_transport")


@pytest.fixture
def fh_hook(add_connection, vendor_url) -> FinnhubHook:
    add_connection("fh_transport", "finnhub", password=FINNHUB_KEY, base_url=f"{vendor_url}/api/v1")
    return FinnhubHook("fh_transport")


# --- item 1: the transport's own logs ----------------------------------------------------------------


def test_alphavantage_key_is_redacted_in_urllib3_debug_log_without_airflow_masker(av_hook, debug_log):
    body = av_hook.query({"function": "GLOBAL_QUOTE", "symbol": "IBM"}, "a quote of IBM", expect="Global Quote")

    assert body == QUOTE_AV
    request_lines = [line for line in debug_log.lines if line.startswith("urllib3.connectionpool") and "/query?" in line]
    assert request_lines, debug_log.text  # urllib3 did log the request line, query string included
    assert ALPHAVANTAGE_KEY not in debug_log.text
    assert all(f"apikey={REDACTED}" in line for line in request_lines), request_lines


def test_key_is_redacted_for_a_handler_on_the_urllib3_parent_logger(av_hook, debug_log):
    # Records propagate from urllib3.connectionpool to a handler on "urllib3": a filter on the parent
    # logger would not see them; the redaction must happen where the record is made.
    parent_handler = _Lines()
    parent = logging.getLogger("urllib3")
    parent.addHandler(parent_handler)
    try:
        av_hook.query({"function": "GLOBAL_QUOTE", "symbol": "IBM"}, "a quote of IBM", expect="Global Quote")
    finally:
        parent.removeHandler(parent_handler)

    assert any("/query?" in line for line in parent_handler.lines), parent_handler.text
    assert ALPHAVANTAGE_KEY not in parent_handler.text
    assert f"apikey={REDACTED}" in parent_handler.text


def test_finnhub_request_and_a_token_url_logged_by_the_transport_hide_the_key(fh_hook, debug_log):
    # The hook sends the key in a header, which urllib3 does not log; finnhub-python and proxies put it
    # in ``token=``, and urllib3 logs that URL: once a Finnhub hook is in use, such a line is redacted.
    quote = fh_hook.get_quote("AAPL")
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s', "https", "finnhub.io", 443, "GET",
        f"/api/v1//quote?symbol=AAPL&token={FINNHUB_KEY}", "HTTP/1.1", 200, 120,
    )

    assert quote["c"] == QUOTE_FH["c"]
    assert any("/api/v1/quote?symbol=AAPL" in line for line in debug_log.lines), debug_log.text
    assert FINNHUB_KEY not in debug_log.text
    assert f"token={REDACTED}" in debug_log.text


def test_keys_of_several_hooks_are_all_redacted_and_the_filter_is_installed_once(
    add_connection, vendor_url, av_hook, fh_hook, debug_log
):
    other_av_key = "test-key-AV-second-9F3K2Q"
    add_connection("av_transport_2", "alphavantage", password=other_av_key, base_url=vendor_url)
    for hook in (av_hook, AlphaVantageHook("av_transport_2"), AlphaVantageHook("av_transport")):
        hook.query({"function": "GLOBAL_QUOTE", "symbol": "IBM"}, "a quote of IBM", expect="Global Quote")
    fh_hook.get_quote("AAPL")
    # Bare keys, in no key-named parameter: only the keys the hooks hold can find them.
    logging.getLogger("urllib3.connectionpool").debug(
        "Redirecting %s -> %s", f"http://proxy/{ALPHAVANTAGE_KEY}/q", f"http://proxy/{other_av_key}/{FINNHUB_KEY}"
    )
    logging.getLogger("urllib3.util.retry").debug("Incremented Retry for (url='%s'): %r", f"/x/{FINNHUB_KEY}", None)

    leaked = [k for k in (ALPHAVANTAGE_KEY, other_av_key, FINNHUB_KEY) if k in debug_log.text]
    assert leaked == [], debug_log.text
    assert f"http://proxy/{REDACTED}/{REDACTED}" in debug_log.text
    for name in TRANSPORT_LOGGERS:
        redactors = [f for f in logging.getLogger(name).filters if type(f).__name__ == "TransportLogRedactor"]
        assert len(redactors) == 1, (name, logging.getLogger(name).filters)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def test_odd_records_still_log_and_stay_redacted(av_hook, debug_log, capsys):
    av_hook.query({"function": "GLOBAL_QUOTE", "symbol": "IBM"}, "a quote of IBM", expect="Global Quote")
    debug_log.lines.clear()
    pool = logging.getLogger("urllib3.connectionpool")

    pool.debug("GET /query?apikey=%s sent %d bytes", ALPHAVANTAGE_KEY, "not a number")  # bad args
    pool.debug("too few args %s %s", f"key {ALPHAVANTAGE_KEY}")
    pool.debug("unprintable %s %s", _Unprintable(), ALPHAVANTAGE_KEY)
    pool.debug({"url": f"/query?apikey={ALPHAVANTAGE_KEY}"})  # a non-string message
    pool.debug("100%% sent to %s", f"/query?apikey={ALPHAVANTAGE_KEY}")  # a '%' survives the rewrite
    try:
        raise ValueError(f"failed /query?apikey={ALPHAVANTAGE_KEY}")
    except ValueError:
        pool.debug("with a traceback", exc_info=True)

    assert len(debug_log.lines) == 6, debug_log.text
    assert ALPHAVANTAGE_KEY not in debug_log.text
    assert "Logging error" not in capsys.readouterr().err
    assert f"100% sent to /query?apikey={REDACTED}" in debug_log.text
    assert "(arguments: ***, not a number)" in debug_log.text
    assert "ValueError: failed /query?apikey=***" in debug_log.text


def test_importing_the_hooks_installs_no_log_filter():
    code = (
        "import logging\n"
        "import airflow_provider_portfolio.hooks.alphavantage, airflow_provider_portfolio.hooks.finnhub\n"
        "import airflow_provider_portfolio.hooks.alpaca\n"
        f"names = {TRANSPORT_LOGGERS!r}\n"
        "print([n for n in names if logging.getLogger(n).filters])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --- item 2: redact_text's boundaries ----------------------------------------------------------------


def test_redact_text_hides_a_four_character_secret_and_skips_a_three_character_one():
    assert redact_text("key id Zq8v was refused", ["Zq8v"]) == "key id *** was refused"
    assert redact_text("the abc of it", ["abc"]) == "the abc of it"


def test_redact_text_hides_a_token_parameter_it_does_not_hold():
    assert (
        redact_text("https://finnhub.io/api/v1/quote?symbol=AAPL&token=abcd1234")
        == "https://finnhub.io/api/v1/quote?symbol=AAPL&token=***"
    )
    assert redact_text("GET /api/v1//quote?token=abcd1234&symbol=AAPL") == "GET /api/v1//quote?token=***&symbol=AAPL"
