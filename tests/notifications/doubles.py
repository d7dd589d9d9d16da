"""Real servers on 127.0.0.1 that receive notifications: an SMTP server (aiosmtpd) and a Slack webhook double."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.airflow.realairflow import free_port


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    text: str  # the decoded body (HTML)
    raw: str  # the whole message as received, headers included


class SmtpDouble:
    """An SMTP server on 127.0.0.1 (aiosmtpd in a thread) that keeps every mail; with ``login``/``password`` it
    requires AUTH (plain, no TLS) and refuses other credentials."""

    def __init__(self, *, login: str | None = None, password: str | None = None):
        self.login = login
        self.password = password
        self.mails: list[Mail] = []
        self.auths: list[tuple[str, bool]] = []
        self.port = free_port()

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        ok = (auth_data.login.decode(), auth_data.password.decode()) == (self.login, self.password)
        self.auths.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), str(msg["Subject"]),
                               part.get_content() if part else "", envelope.content.decode("utf-8", "replace")))
        return "250 Message accepted for delivery"

    def __enter__(self) -> SmtpDouble:
        from aiosmtpd.controller import Controller

        kwargs = {}
        if self.login is not None:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False, "auth_required": True}
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def connection(self, **extra: object) -> dict:
        """The Airflow connection (JSON body) of this server: plain SMTP, no SSL or STARTTLS."""
        body: dict = {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                      "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "desk@example.com",
                                "timeout": 10, "retry_limit": 0, **extra}}
        if self.login is not None:
            body.update(login=self.login, password=self.password)
        return body

    def wait(self, count: int = 1, timeout: float = 10) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while len(self.mails) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.mails)


class SlackDouble:
    """A Slack incoming-webhook double on 127.0.0.1: records each POST (path, JSON body), answers ``status``."""

    def __init__(self, *, status: int = 200):
        self.status = status
        self.posts: list[tuple[str, dict]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                double.posts.append((self.path, body))
                answer = b"ok" if double.status == 200 else b"invalid_token"
                self.send_response(double.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> SlackDouble:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def connection(self, token: str = "T000/B000/test-key") -> dict:
        """The Airflow connection (JSON body): type slackwebhook, host this server, the webhook token as password."""
        return {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{self.port}", "password": token}

    def wait(self, count: int = 1, timeout: float = 10) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.posts)
