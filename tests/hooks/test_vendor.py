"""The base every vendor hook shares: fields, timeouts, error mapping, bounded retries, redaction."""

from __future__ import annotations

import logging
import sys
import types

import pytest
import requests

from airflow_provider_portfolio.exceptions import (
    AuthenticationError,
    InvalidInputError,
    PlanNotSupportedError,
    RateLimitError,
    UnknownSymbolError,
    VendorError,
    VendorUnavailableError,
)
from airflow_provider_portfolio.get_provider_info import CONNECTION_TYPES
from airflow_provider_portfolio.hooks.vendor import VendorHook, redact_text
from tests.vendorkeys import FINNHUB_KEY

URL = "https://vendor.test/api/quote"


class DemoHook(VendorHook):
    conn_name_attr = "demo_conn_id"
    default_conn_name = "demo_default"
    conn_type = "finnhub"  # reuses a declared form, for the legacy classmethods
    hook_name = "Demo"
    vendor = "Demo"

    def __init__(self, demo_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.demo_conn_id = demo_conn_id

    def probe(self) -> str:
        body = self.read(lambda: self.get_json(URL, params={"token": self.api_key()}, what="a quote"), "a quote")
        return f"quote {body['c']}"


@pytest.fixture
def hook(add_connection, no_sleep) -> DemoHook:
    add_connection("demo", "finnhub", password=FINNHUB_KEY)
    h = DemoHook("demo")
    h.sleep = no_sleep.append
    return h


def test_redact_text_hides_secrets_and_key_parameters():
    text = f"GET {URL}?symbol=AAPL&token={FINNHUB_KEY} failed; apikey=abc123XYZ; key {FINNHUB_KEY}"
    out = redact_text(text, [FINNHUB_KEY, "ab"])
    assert FINNHUB_KEY not in out and "abc123XYZ" not in out
    assert "symbol=AAPL" in out and "token=***" in out and "apikey=***" in out
    assert redact_text('{"APCA-API-SECRET-KEY": "s3cr3t-value"}') == '{"APCA-API-SECRET-KEY": "***"}'
    assert redact_text("about 20 seconds", ["ab"]) == "about 20 seconds"  # short values are not hunted


def test_construction_does_no_io_and_names_the_connection():
    h = DemoHook("nowhere")
    assert h.conn_id == "nowhere" and "connection" not in h.__dict__
    with pytest.raises(InvalidInputError, match="'nowhere' does not exist"):
        h.connection


@pytest.mark.parametrize(
    ("extra", "attr", "message"),
    [
        ({"timeout": "soon"}, "timeout", "timeout must be a number"),
        ({"timeout": 0}, "timeout", "timeout must be a number"),
        ({"timeout": 301}, "timeout", "timeout must be a number"),
        ({"base_url": "ftp://vendor.test"}, "base_url", "base_url must look like"),
        ({"base_url": "vendor.test/api"}, "base_url", "base_url must look like"),
        ({"base_url": f"https://vendor.test/api?token={FINNHUB_KEY}"}, "base_url", "base_url must look like"),
        ({"paper": "maybe"}, "flag", "paper must be true or false"),
    ],
)
def test_bad_connection_fields_are_named(add_connection, extra, attr, message):
    add_connection("demo", "finnhub", password=FINNHUB_KEY, **extra)
    h = DemoHook("demo")
    with pytest.raises(InvalidInputError, match=message) as err:
        if attr == "timeout":
            h.timeout
        elif attr == "base_url":
            h.base_url("https://vendor.test")
        else:
            h.flag("paper", True)
    assert "'demo'" in str(err.value) and FINNHUB_KEY not in str(err.value)


def test_fields_plain_or_prefixed_and_defaults(add_connection):
    add_connection("demo", "finnhub", password=FINNHUB_KEY, extra__finnhub__timeout="2.5", paper="false",
                   base_url="")
    h = DemoHook("demo")
    assert h.timeout == 2.5
    assert h.flag("paper", True) is False
    assert h.base_url("https://vendor.test/api/") == "https://vendor.test/api"
    add_connection("other", "finnhub", password=FINNHUB_KEY)
    assert DemoHook("other").timeout == VendorHook.default_timeout


@pytest.mark.parametrize("password", [None, "", "   "])
def test_missing_key_is_an_authentication_error(add_connection, password):
    add_connection("demo", "finnhub", password=password)
    with pytest.raises(AuthenticationError, match="'demo'.*password field"):
        DemoHook("demo").api_key()


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (403, PlanNotSupportedError), (404, UnknownSymbolError), (400, VendorError),
     (500, VendorUnavailableError), (503, VendorUnavailableError)],
)
def test_http_statuses_map_to_vendor_errors(hook, requests_mock, status, error):
    requests_mock.get(URL, status_code=status, text=f'{{"error": "bad", "echo": "token={FINNHUB_KEY}"}}')
    with pytest.raises(error) as err:
        hook.get_json(URL, params={"token": FINNHUB_KEY}, what="a quote")
    assert type(err.value) is error
    assert err.value.status_code == status and err.value.conn_id == "demo"
    assert FINNHUB_KEY not in str(err.value) and f"HTTP {status}" in str(err.value)
    assert requests_mock.last_request.timeout == VendorHook.default_timeout


def test_429_is_a_burst_limit_with_retry_after(hook, requests_mock):
    requests_mock.get(URL, status_code=429, headers={"Retry-After": "7"}, json={"error": "API limit reached"})
    with pytest.raises(RateLimitError) as err:
        hook.get_json(URL)
    assert err.value.kind == "burst" and err.value.is_burst and err.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("exc", "says"),
    [(requests.exceptions.ConnectTimeout, "did not answer a quote within 10 s"),
     (requests.exceptions.ReadTimeout, "did not answer a quote within 10 s"),
     (requests.exceptions.ConnectionError(f"Max retries exceeded with url: /quote?token={FINNHUB_KEY}"),
      "could not be reached")],
)
def test_transport_failures_are_unavailable_and_redacted(hook, requests_mock, exc, says):
    requests_mock.get(URL, exc=exc)
    with pytest.raises(VendorUnavailableError, match=says) as err:
        hook.get_json(URL, params={"token": FINNHUB_KEY}, what="a quote")
    assert FINNHUB_KEY not in str(err.value)


def test_html_instead_of_json_is_named(hook, requests_mock):
    requests_mock.get(URL, text="<html><body>502 Bad Gateway</body></html>", headers={"Content-Type": "text/html"})
    with pytest.raises(VendorError, match="text/html instead of JSON.*502 Bad Gateway"):
        hook.get_json(URL, what="a quote")


def test_read_retries_unavailable_and_burst_then_succeeds(hook, requests_mock, no_sleep, caplog):
    requests_mock.get(
        URL,
        [
            {"status_code": 503, "text": "busy"},
            {"status_code": 429, "headers": {"Retry-After": "3"}, "json": {"error": "API limit reached"}},
            {"json": {"c": 190.5}},
        ],
    )
    with caplog.at_level(logging.WARNING):
        assert hook.probe() == "quote 190.5"
    assert requests_mock.call_count == 3
    assert no_sleep == [1.0, 3.0]  # the backoff, then what the vendor asked
    assert "retrying" in caplog.text and FINNHUB_KEY not in caplog.text


def test_read_gives_up_after_its_attempts(hook, requests_mock, no_sleep):
    requests_mock.get(URL, status_code=502, text="bad gateway")
    with pytest.raises(VendorUnavailableError, match="HTTP 502"):
        hook.probe()
    assert requests_mock.call_count == hook.read_attempts == 3
    assert no_sleep == [1.0, 2.0]


def test_waits_are_capped(hook, no_sleep):
    calls = []

    def call():
        calls.append(1)
        if len(calls) == 1:
            raise RateLimitError("slow down", kind="burst", retry_after=3600)
        return "ok"

    assert hook.read(call, "x") == "ok"
    assert no_sleep == [hook.max_wait_s]


@pytest.mark.parametrize(
    "error",
    [RateLimitError("daily quota spent", kind="quota"), AuthenticationError("bad key"), VendorError("bad request"),
     InvalidInputError("bad input")],
)
def test_read_does_not_retry_what_waiting_cannot_fix(hook, no_sleep, error):
    calls = []

    def call():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        hook.read(call, "x")
    assert len(calls) == 1 and no_sleep == []


def test_rate_limit_kind_is_checked():
    with pytest.raises(ValueError, match="burst"):
        RateLimitError("x", kind="sometimes")


def test_test_connection_reports_success_and_redacted_failure(hook, requests_mock):
    requests_mock.get(URL, json={"c": 1.5})
    assert hook.test_connection() == (True, "quote 1.5")
    requests_mock.get(URL, status_code=401, text=f"Invalid API key {FINNHUB_KEY}")
    ok, message = hook.test_connection()
    assert ok is False and "AuthenticationError" in message and FINNHUB_KEY not in message


def test_reading_the_connection_registers_its_secret_with_the_masker(hook, monkeypatch):
    masked = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda value, name=None: masked.append(value))
    hook.connection
    assert FINNHUB_KEY in masked


def test_alpaca_registers_its_key_id_too_and_other_vendors_only_their_key(add_connection, monkeypatch):
    """The base hook knows no vendor: Alpaca's override adds the key ID (half of its credentials)."""
    from airflow_provider_portfolio.hooks.alpaca import AlpacaHook
    from tests.vendorkeys import ALPACA_KEY_ID, ALPACA_SECRET

    masked = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda value, name=None: masked.append(value))
    add_connection("alpaca_mask", "alpaca", login=ALPACA_KEY_ID, password=ALPACA_SECRET)
    add_connection("demo_mask", "finnhub", login="visible-login-name", password=FINNHUB_KEY)
    AlpacaHook("alpaca_mask").connection
    DemoHook("demo_mask").connection
    assert masked == [ALPACA_SECRET, ALPACA_KEY_ID, FINNHUB_KEY]


def test_legacy_form_classmethods_mirror_the_declarative_form(monkeypatch):
    """Airflow 3.1 builds forms from these; its api-server stands in simple fakes for wtforms/FAB."""

    class Field:
        def __init__(self, label, validators=None, description="", default=None, widget=None):
            self.label, self.validators, self.description, self.default = label, validators or [], description, default

    class StringField(Field):
        pass

    class BooleanField(Field):
        pass

    fakes = {
        "wtforms": types.SimpleNamespace(StringField=StringField, BooleanField=BooleanField),
        "wtforms.validators": types.SimpleNamespace(Optional=lambda: "optional", any_of=lambda values: ("any_of", values)),
        "flask_babel": types.SimpleNamespace(lazy_gettext=lambda text: text),
        "flask_appbuilder": types.ModuleType("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": types.SimpleNamespace(BS3TextFieldWidget=lambda: "widget"),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    declared = {c["connection-type"]: c for c in CONNECTION_TYPES}
    assert "get_connection_form_widgets" in DemoHook.__dict__ and "get_ui_field_behaviour" in DemoHook.__dict__
    widgets = DemoHook.get_connection_form_widgets()
    assert set(widgets) == set(declared["finnhub"]["conn-fields"])
    assert widgets["timeout"].label == "Request timeout (seconds)" and widgets["timeout"].default == "10"
    behaviour = DemoHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == declared["finnhub"]["ui-field-behaviour"]["hidden-fields"]
    assert behaviour["relabeling"] == {"password": "API key"}
