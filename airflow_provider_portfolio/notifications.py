"""The provider's notifications: one message shape, sent by SMTP and Slack when configured, else to the log.

Three ways in, one way out:

- :class:`PortfolioNotifier`, an Airflow notifier: ``on_failure_callback=PortfolioNotifier()`` on a DAG or a task;
- :func:`notify_health` for a RED health report (the monitoring operator calls it);
- :func:`deadline_alert` (and the ready :func:`daily_etl_deadline`, :func:`trader_cycle_deadline`,
  :func:`monitoring_deadline`): an Airflow deadline alert whose callback, :func:`deadline_missed`, runs in the
  triggerer and notifies ``deadline missed: <what>``.

Each ends in :func:`notify`, which names the DAG, run, task, reason and a link to the run in the Airflow UI, passes
every line through Airflow's secrets masker and sends it through

- Airflow's SMTP provider when ``[portfolio] notify_smtp_conn_id`` names a connection that exists and
  ``[portfolio] notify_email_to`` is set;
- Airflow's Slack provider (``pip install 'airflow-provider-portfolio[slack]'``) when ``[portfolio]
  notify_slack_conn_id`` names an existing Slack incoming-webhook connection.

With neither, the whole message is logged at WARNING, and the process says once how to configure a channel. A
channel that fails logs why (masked) and never stops the other; nothing here raises out of a callback.

Importing this module imports ``airflow.sdk`` (for :class:`BaseNotifier`) and nothing else heavy: the providers,
Airflow's config and the deadline classes are imported when used.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from airflow_provider_portfolio.exceptions import InvalidInputError

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.definitions.deadline import DeadlineAlert

log = logging.getLogger(__name__)

#: Levels a notification carries, best to worst (those of :class:`~airflow_provider_portfolio.desk.health.Level`).
LEVELS = ("GREEN", "YELLOW", "RED")

#: ``reference`` names :func:`deadline_alert` accepts -> the attribute of Airflow's ``DeadlineReference``.
DEADLINE_REFERENCES = {"queued": "DAGRUN_QUEUED_AT", "logical_date": "DAGRUN_LOGICAL_DATE"}

#: Seconds a Slack webhook post may take when the connection has no ``timeout`` extra.
SLACK_TIMEOUT = 10
_DEFAULT_BASE_URL = "http://localhost:8080"
_DEFAULT_FROM = "airflow@localhost"
_MAX_REASON = 2000
_said: set[str] = set()  # advice already logged by this process


def _once(key: str, level: int, msg: str, *args: object) -> None:
    if key not in _said:
        _said.add(key)
        log.log(level, msg, *args)


def _mask(value: object) -> str:
    """``value`` as text with every secret Airflow's masker knows replaced by ``***``."""
    text = value if isinstance(value, str) else str(value)
    try:
        from airflow.sdk.log import redact

        return str(redact(text))
    except Exception:  # a masker that cannot run must not lose the message
        return text


def _mask_connection(conn: Any) -> None:
    """Register a channel connection's password and extras with the masker, so no log or message shows them."""
    try:
        from airflow.sdk.log import mask_secret

        if conn.password:
            mask_secret(conn.password)
        if conn.extra:
            mask_secret(conn.extra)  # as Airflow masks a connection a task reads
            mask_secret(conn.extra_dejson)  # and each value under a sensitive key
    except Exception:
        pass


def _option(name: str) -> str:
    from airflow_provider_portfolio.config import get_option

    return get_option(name)


def run_url(dag_id: str, run_id: str | None = None, task_id: str | None = None, *, map_index: int | None = None,
            base_url: str | None = None) -> str:
    """The Airflow 3 UI's page of a DAG, a run or a task of a run: ``<base>/dags/<dag>/runs/<run>/tasks/<task>``.

    :param dag_id: the DAG.
    :param run_id: the run (``None``: the DAG's page).
    :param task_id: the task in that run.
    :param map_index: the mapped instance (``>= 0``) of a mapped task.
    :param base_url: the UI's address; default Airflow's ``[api] base_url`` (``http://localhost:8080`` when unset).
    """
    if base_url is None:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback=None) or _DEFAULT_BASE_URL
    url = f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}"
    if run_id:
        url += f"/runs/{quote(run_id, safe='')}"
        if task_id:
            url += f"/tasks/{quote(task_id, safe='')}"
            if map_index is not None and map_index >= 0:
                url += f"/mapped/{map_index}"
    return url


def _level(level: object) -> str:
    name = str(getattr(level, "name", level)).strip().upper()
    if name not in LEVELS:
        raise InvalidInputError(f"notification level must be one of {list(LEVELS)}, got {level!r}")
    return name


def format_message(subject: str, body: str = "", *, dag_id: str | None = None, run_id: str | None = None,
                   task_id: str | None = None, reason: str, level: str = "RED",
                   url: str | None = None) -> tuple[str, str]:
    """The subject line and the text of a notification, masked (what :func:`notify` sends).

    :return: ``("[portfolio <LEVEL>] <subject>", text)``; the text names level, DAG, run, task, reason and link,
        then ``body``.
    """
    level = _level(level)
    if url is None and dag_id:
        url = run_url(dag_id, run_id, task_id)
    head = f"[portfolio {level}] {' '.join(str(subject).split())}"
    lines = [head, "", f"Level: {level}"]
    lines += [f"{label}: {value}" for label, value in (("DAG", dag_id), ("Run", run_id), ("Task", task_id)) if value]
    lines.append(f"Reason: {reason}")
    if url:
        lines.append(f"Link: {url}")
    if body:
        lines += ["", body.rstrip()]
    return _mask(head), _mask("\n".join(lines))


# ---------------------------------------------------------------------------------------------- channels


def _connection(conn_id: str, option: str) -> Any | None:
    """The connection ``conn_id`` (named by ``[portfolio] <option>``), ``None`` (said once) when it does not exist."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        _once(f"missing:{option}:{conn_id}", logging.WARNING,
              "[portfolio] %s names connection %r, which does not exist: that channel is off", option, conn_id)
        return None
    except Exception as err:
        log.error("Connection %r ([portfolio] %s) could not be read: %s", conn_id, option,
                  _mask(f"{type(err).__name__}: {err}"))
        return None
    _mask_connection(conn)
    return conn


def _smtp_channel() -> tuple[str, Any] | None:
    conn_id = _option("notify_smtp_conn_id")
    if not conn_id:
        return None
    to = [a.strip() for a in _option("notify_email_to").replace(";", ",").split(",") if a.strip()]
    if not to:
        _once("smtp:no-to", logging.WARNING, "[portfolio] notify_smtp_conn_id is set but notify_email_to is empty: "
              "no mail is sent; set notify_email_to to the comma-separated recipients")
        return None
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook
    except ImportError:
        _once("smtp:not-installed", logging.WARNING, "[portfolio] notify_smtp_conn_id is set but Airflow's SMTP "
              "provider is not installed: pip install apache-airflow-providers-smtp")
        return None
    conn = _connection(conn_id, "notify_smtp_conn_id")
    if conn is None:
        return None

    def send(subject: str, text: str) -> None:
        from airflow.configuration import conf

        sender = conn.extra_dejson.get("from_email") or conf.get("email", "from_email", fallback=None) or _DEFAULT_FROM
        content = f'<pre style="font-family: monospace">{html.escape(text)}</pre>'
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(to=to, subject=subject, html_content=content, from_email=sender)

    return f"smtp (connection {conn_id!r}, to {', '.join(to)})", send


def _slack_channel() -> tuple[str, Any] | None:
    conn_id = _option("notify_slack_conn_id")
    if not conn_id:
        return None
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    except ImportError:
        _once("slack:not-installed", logging.WARNING, "[portfolio] notify_slack_conn_id is set but Airflow's Slack "
              "provider is not installed: pip install 'airflow-provider-portfolio[slack]'")
        return None
    conn = _connection(conn_id, "notify_slack_conn_id")
    if conn is None:
        return None
    timeout = None if conn.extra_dejson.get("timeout") else SLACK_TIMEOUT  # the hook prefers its own argument

    def send(subject: str, text: str) -> None:
        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=timeout).send_text(text)

    return f"slack (connection {conn_id!r})", send


def _channels() -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for name, make in (("smtp", _smtp_channel), ("slack", _slack_channel)):
        try:
            channel = make()
        except Exception as err:  # a config that cannot be read turns that channel off, never the notification
            log.error("Notification channel %s is off: %s", name, _mask(f"{type(err).__name__}: {err}"))
            channel = None
        if channel is not None:
            found[name] = channel
    if found:
        _once("channels:" + ",".join(found), logging.INFO, "Portfolio notifications go through %s",
              "; ".join(desc for desc, _ in found.values()))
    else:
        _once("channels:log", logging.WARNING,
              "Portfolio notifications go to this log only. To mail them, set [portfolio] notify_smtp_conn_id to an "
              "SMTP connection and notify_email_to to the recipients; for Slack, install "
              "'airflow-provider-portfolio[slack]' and set [portfolio] notify_slack_conn_id to a Slack incoming-"
              "webhook connection (AIRFLOW__PORTFOLIO__NOTIFY_... in the environment works too)")
    return found


def notify(subject: str, body: str = "", *, dag_id: str | None = None, run_id: str | None = None,
           task_id: str | None = None, reason: str, level: str = "RED", url: str | None = None) -> list[str]:
    """Send one notification through every configured channel; the log when none is configured or none sent.

    Never raises for a channel that fails: the error is logged (masked) and the other channel still sends.

    :param subject: what happened, one line.
    :param body: more detail after the standard lines (may be empty).
    :param dag_id: the DAG it is about.
    :param run_id: the run it is about.
    :param task_id: the task it is about.
    :param reason: why (an exception, a missed deadline, the RED checks).
    :param level: ``GREEN``, ``YELLOW`` or ``RED``.
    :param url: link to show; default the run's (or task's) page in the Airflow UI when ``dag_id`` is given.
    :return: the channels that sent, e.g. ``["smtp", "slack"]``; ``["log"]`` when the message was only logged.
    :raises InvalidInputError: for an unknown ``level``.
    """
    level = _level(level)
    channels = _channels()  # first: reading their connections registers their secrets with the masker
    head, text = format_message(subject, body, dag_id=dag_id, run_id=run_id, task_id=task_id, reason=reason,
                                level=level, url=url)
    sent: list[str] = []
    for name, (_, send) in channels.items():
        try:
            send(head, text)
        except Exception as err:
            log.error("Notification through %s failed: %s", name, _mask(f"{type(err).__name__}: {err}"))
        else:
            sent.append(name)
    if sent:
        log.info("Notification sent through %s: %s", ", ".join(sent), head)
        return sent
    log.warning("%s", text)
    return ["log"]


def _number(value: Any) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    return str(value)


def _threshold(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_number(v)}" for k, v in value.items())
    return _number(value)


def notify_health(report: Mapping[str, Any], *, dag_id: str | None, run_id: str | None,
                  task_id: str | None = None) -> list[str]:
    """Notify a health report (``HealthReport.to_dict()``): subject with its level, body with every RED check (value,
    threshold, message), then the YELLOW ones.

    The caller decides when to call (the monitoring operator: on RED); any level is sent as given.

    :param report: ``{"kind", "ts", "level", "failed", "checks": [{name, level, value, threshold, message,
        subject?}]}``.
    :param dag_id: the DAG that made it.
    :param run_id: its run.
    :param task_id: its task.
    :return: the channels that sent (see :func:`notify`).
    :raises InvalidInputError: when ``report`` is not that shape.
    """
    if not isinstance(report, Mapping) or "level" not in report or not isinstance(report.get("checks", []), Sequence):
        raise InvalidInputError(f"notify_health: report must be a HealthReport.to_dict() mapping with 'level' and "
                                f"'checks', got {type(report).__name__}")
    level = _level(report["level"])
    kind = str(report.get("kind") or "health")
    checks = [c for c in report.get("checks", []) if isinstance(c, Mapping)]

    def label(check: Mapping[str, Any]) -> str:
        return f"{check.get('name')}[{check['subject']}]" if check.get("subject") else str(check.get("name"))

    def lines(at: str) -> list[str]:
        return [f"- {label(c)}: value {_number(c.get('value'))}, threshold {_threshold(c.get('threshold'))}"
                + (f" ({c['message']})" if c.get("message") else "")
                for c in checks if str(c.get("level", "")).upper() == at]

    red, yellow = lines("RED"), lines("YELLOW")
    failed = [str(x) for x in report.get("failed") or []] or [label(c) for c in checks
                                                               if str(c.get("level", "")).upper() == "RED"]
    body = []
    if red:
        body += [f"Failed checks ({len(red)}):", *red]
    if yellow:
        body += ([""] if body else []) + [f"Warnings ({len(yellow)}):", *yellow]
    if report.get("ts"):
        body += ["", f"Report time: {report['ts']}"]
    subject = f"{kind} health {level}" + (f": {len(failed)} failed check(s)" if failed else "")
    reason = f"{kind} health is {level}" + (f": {', '.join(failed)}" if failed else "")
    return notify(subject, "\n".join(body), dag_id=dag_id, run_id=run_id, task_id=task_id, reason=reason, level=level)


# ---------------------------------------------------------------------------------------------- the notifier


def describe_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """DAG id, run id, task id, map index, exception and Airflow's reason from a callback's context.

    Works for task callbacks (``ti``, ``exception``), DAG callbacks (``dag``, ``run_id``/``dag_run``, ``reason``,
    the last task instance) and a context a caller builds by hand.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    task = context.get("task")

    def first(*values: Any) -> Any:
        return next((v for v in values if v not in (None, "")), None)

    return {
        "dag_id": first(getattr(dag, "dag_id", None), getattr(dag_run, "dag_id", None), getattr(ti, "dag_id", None)),
        "run_id": first(context.get("run_id"), getattr(dag_run, "run_id", None), getattr(ti, "run_id", None)),
        "task_id": first(getattr(ti, "task_id", None), getattr(task, "task_id", None)),
        "map_index": getattr(ti, "map_index", None),
        "exception": context.get("exception"),
        "reason": context.get("reason"),
    }


class PortfolioNotifier(BaseNotifier):
    """The provider's notifier: ``on_failure_callback=PortfolioNotifier()`` on a DAG or a task.

    The message names the DAG, the run, the task (when any), the reason (the task's exception, after ``reason``
    when both are given; Airflow's reason for a DAG callback) and a link to the run in the Airflow UI, and goes
    through :func:`notify`. A notifier never raises out of a callback: whatever fails is logged.

    :param reason: why, in the DAG author's words (templated).
    :param subject: the subject line (templated); default ``task <dag>.<task> failed`` / ``DAG <dag> failed``.
    :param level: ``GREEN``, ``YELLOW`` or ``RED`` (default; a failure).
    """

    # Not "reason": BaseNotifier merges its template fields into the context, where Airflow's reason lives.
    template_fields: Sequence[str] = ("reason_text", "subject")

    def __init__(self, *, reason: str | None = None, subject: str | None = None, level: str = "RED"):
        super().__init__()
        self.reason_text = reason
        self.subject = subject
        self.level = _level(level)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # A DAG callback may get the scheduler's serialized DAG (dag.test does), which has no template env.
        dag = context.get("dag")
        if jinja_env is None and not callable(getattr(dag, "get_template_env", None)):
            jinja_env = self.get_template_env()
        super().render_template_fields(context, jinja_env)

    def _render(self, template: Any, context: Any, dag: Any = None) -> Any:
        from airflow.sdk.definitions.context import render_template_to_string

        return render_template_to_string(template, context)  # always text, whatever the DAG renders natively

    def __call__(self, *args: Any) -> None:
        try:
            super().__call__(*args)
        except Exception as err:  # template rendering included: a callback never raises
            log.error("Portfolio notification failed: %s", _mask(f"{type(err).__name__}: {err}"))

    def message(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments :meth:`notify` passes to :func:`notify` for ``context``."""
        facts = describe_context(context)
        parts = [str(self.reason_text)] if self.reason_text else []
        exc = facts["exception"]
        if exc is not None:
            parts.append(exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")
        elif facts["reason"]:
            parts.append(str(facts["reason"]))
        reason = ": ".join(parts) or "failed"
        if len(reason) > _MAX_REASON:
            reason = reason[:_MAX_REASON] + " [...]"
        dag_id, run_id, task_id = facts["dag_id"], facts["run_id"], facts["task_id"]
        what = f"task {dag_id}.{task_id}" if task_id else f"DAG {dag_id}" if dag_id else "an Airflow callback"
        subject = self.subject or (f"{what} failed" if self.level == "RED" else f"{what}: {reason.splitlines()[0]}")
        url = run_url(dag_id, run_id, task_id, map_index=facts["map_index"]) if dag_id else None
        return {"subject": subject, "body": "", "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
                "reason": reason, "level": self.level, "url": url}

    def notify(self, context: Context) -> None:
        try:
            notify(**self.message(context))
        except Exception as err:
            log.error("Portfolio notification failed: %s", _mask(f"{type(err).__name__}: {err}"))


# ---------------------------------------------------------------------------------------------- deadlines


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def deadline_missed(*, what: str, context: Mapping[str, Any] | None = None, **kwargs: Any) -> list[str]:
    """The deadline alerts' callback (an ``AsyncCallback``, run by the triggerer): notifies ``deadline missed: <what>``.

    Airflow passes ``context={"dag_run": <the run as the REST API shows it>, "deadline": {"id", "deadline_time"}}``
    (3.1 and later); the message names the DAG, the run, the deadline and when the run was queued.

    :param what: what was due, e.g. ``daily ETL done by 06:00 New York``.
    :param context: Airflow's deadline context.
    :return: the channels that sent (see :func:`notify`); ``[]`` when even that failed (logged).
    """
    try:
        from asgiref.sync import sync_to_async

        ctx = context or {}
        run = ctx.get("dag_run") or {}
        deadline = ctx.get("deadline") or {}
        dag_id = run.get("dag_id")
        run_id = run.get("dag_run_id") or run.get("run_id")
        body = [f"{label}: {_when(value)}" for label, value in (
            ("Deadline", deadline.get("deadline_time")), ("Run queued at", run.get("queued_at")),
            ("Run started at", run.get("start_date")), ("Logical date", run.get("logical_date")),
            ("Run state", run.get("state"))) if value]
        # Connections and config are read through the triggerer's comms: in a worker thread, never on its loop.
        return await sync_to_async(notify)(f"deadline missed: {what}", "\n".join(body), dag_id=dag_id, run_id=run_id,
                                           reason=f"deadline missed: {what}", level="RED")
    except Exception as err:
        log.error("Deadline notification failed: %s", _mask(f"{type(err).__name__}: {err}"))
        return []


def deadline_alert(interval: timedelta, *, reference: str = "queued", what: str) -> DeadlineAlert:
    """An Airflow deadline alert (``DAG(deadline=...)``) that notifies ``deadline missed: <what>``.

    :param interval: how long after the reference the run must be done.
    :param reference: ``queued`` (when the run was queued: "within N minutes of starting") or ``logical_date``
        (the run's logical date; for a cron schedule, its scheduled time).
    :param what: what was due, in the desk's words.
    :raises InvalidInputError: naming the parameter, for a bad value.
    """
    if not isinstance(interval, timedelta) or interval <= timedelta(0):
        raise InvalidInputError(f"deadline_alert: interval must be a positive timedelta, got {interval!r}")
    if reference not in DEADLINE_REFERENCES:
        raise InvalidInputError(f"deadline_alert: reference must be one of {list(DEADLINE_REFERENCES)}, "
                                f"got {reference!r}")
    if not isinstance(what, str) or not what.strip():
        raise InvalidInputError(f"deadline_alert: what must be a non-empty text, got {what!r}")
    # 3.1 defines AsyncCallback in this module; later versions import it here from definitions.callback.
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(reference=getattr(DeadlineReference, DEADLINE_REFERENCES[reference]), interval=interval,
                         callback=AsyncCallback(deadline_missed, kwargs={"what": what.strip()}))


def configured_deadline(factory: Callable[..., DeadlineAlert], /, **options: Any) -> DeadlineAlert | None:
    """``factory(**options)`` when ``[portfolio] deadline_alerts`` is on, else ``None`` (``DAG(deadline=None)``: no
    alert). The example DAGs declare their deadlines this way: off by default, since ``airflow dags test`` of a DAG
    with a deadline fails on Airflow 3.1.8 and 3.3.2 (apache/airflow#58949, #73428) while the scheduler runs it
    well.

    :param factory: :func:`daily_etl_deadline`, :func:`trader_cycle_deadline`, :func:`monitoring_deadline` or any
        function returning a ``DeadlineAlert``.
    :raises InvalidInputError: for a ``[portfolio] deadline_alerts`` that is not a boolean.
    """
    from airflow_provider_portfolio.config import get_flag

    return factory(**options) if get_flag("deadline_alerts") else None


def daily_etl_deadline(*, scheduled_at: time = time(5, 15), done_by: time = time(6, 0),
                       what: str | None = None) -> DeadlineAlert:
    """"Done by 06:00" for a DAG on a daily cron at ``scheduled_at`` (``15 5 * * 1-5`` in America/New_York).

    Airflow has no wall-clock deadline reference, so this one is the run's logical date plus ``done_by -
    scheduled_at``: with Airflow 3's cron schedules (``CronTriggerTimetable``, the default for cron strings) the
    logical date is the scheduled time, 05:15 New York, and 05:15 + 45 min is 06:00 New York on every day, DST
    included. A run created late (a scheduler down at 06:00) is past its deadline at once and notifies.
    Caveats: a data-interval timetable would put the logical date a day earlier; on Airflow 3.1 a run without a
    logical date (triggered with ``logical_date=None``) cannot be created for a DAG with this reference.

    :param scheduled_at: the cron's time of day, in the DAG's timezone.
    :param done_by: when the run must be done, same timezone, same day.
    :param what: the message's words; default ``daily ETL done by <done_by> (scheduled <scheduled_at>)``.
    """
    interval = datetime.combine(datetime.min, done_by) - datetime.combine(datetime.min, scheduled_at)
    if interval <= timedelta(0):
        raise InvalidInputError(f"daily_etl_deadline: done_by {done_by} must be after scheduled_at {scheduled_at}")
    what = what or f"daily ETL done by {done_by:%H:%M} (scheduled {scheduled_at:%H:%M})"
    return deadline_alert(interval, reference="logical_date", what=what)


def _minutes(minutes: object, what: str) -> timedelta:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not math.isfinite(minutes) or minutes <= 0:
        raise InvalidInputError(f"{what}: minutes must be a positive number, got {minutes!r}")
    return timedelta(minutes=minutes)


def trader_cycle_deadline(minutes: float = 5, *, what: str | None = None) -> DeadlineAlert:
    """An auto-trader cycle done within ``minutes`` of its run being queued (5 by default)."""
    return deadline_alert(_minutes(minutes, "trader_cycle_deadline"), reference="queued",
                          what=what or f"auto-trader cycle within {minutes:g} minutes of its start")


def monitoring_deadline(minutes: float = 10, *, what: str | None = None) -> DeadlineAlert:
    """A monitoring run done within ``minutes`` of its run being queued (10 by default)."""
    return deadline_alert(_minutes(minutes, "monitoring_deadline"), reference="queued",
                          what=what or f"monitoring within {minutes:g} minutes of its start")
