"""Fault injection on the cluster: an ETL and a trader that pause at a chosen moment of their first try, so a test
can kill the worker (or the broker, or the database) right there and watch the retry finish the job.

Test scaffolding only: the operators here are thin subclasses of the provider's, which stay as they are. The run's
conf (over the DAG's params) chooses the universe and the pause:

- ``symbols`` (how many, :func:`cluster_common.universe`), ``chunk`` (ETL symbols per mapped task), ``start`` and
  ``end`` (the ETL's sessions), ``mode`` (``incremental`` or ``full``), ``as_of`` (the cycle's instant),
  ``account`` (the simulated book's name: ledger account ``simulated:<account>``);
- ``pause``: ``none`` or the moment to stop at, on the task's first try (``try_number`` 1):

  - ``record-send`` (task ``trade``): inside the first order's ``SimulatedBroker.submit``, before the real one
    runs. Every approved order of the cycle is recorded ``pending_submit`` by then (``execute_step`` records all
    intents, then sends them one by one) and the simulated book has none of them;
  - ``send-answer`` (task ``trade``): the real ``submit`` of the first order has returned (the book accepted it:
    ``new`` in the ledger, where the simulated book lives) and the cycle has neither recorded the answer nor sent
    the other orders;
  - ``etl`` (a task ``etl``): right after the first symbol's bars of the chunk were committed (``load_bars``
    upserts one symbol per transaction), before the chunk's other symbols are written;

- ``marker``: the path of the marker file the paused task writes (required with a pause; a fresh path per run);
- ``pause_s``: how long the task waits there (default 300 s).

The marker is JSON: ``pause``, ``pid`` (the task's process), ``worker`` (``$PORTFOLIO_WORKER_NAME``, the cluster's
name of the worker, else the host name), ``dag_id``, ``run_id``, ``task_id``, ``map_index``, ``try_number``, ``at``
and what the task was doing (``client_order_id`` and ``symbol``; or ``symbols`` and ``rows``). It is created whole
and at most once (a link to a finished file): the first task to create it pauses, and a retry, a try delivered again
or another mapped chunk runs as normal. The paused task carries on when ``pause_s`` has passed or when the marker is
removed (how a test releases it without a kill). It pauses holding what it holds at that moment: the trader holds its
account's lock (on PostgreSQL an advisory lock on a connection of its own, which the server drops with the killed
worker's connection).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from cluster_common import universe_chunks, universe_symbols

from airflow_provider_portfolio.operators.etl import PortfolioETLOperator
from airflow_provider_portfolio.operators.trading import AutoTraderOperator

#: The moments a run can pause at, by the task that pauses there.
TRADE_PAUSES = ("record-send", "send-answer")
ETL_PAUSES = ("etl",)
#: How long a paused task waits when neither the conf nor the operator says, seconds.
DEFAULT_PAUSE_S = 300.0
#: How often a paused task looks for its marker (removed: carry on), seconds.
POLL_S = 0.1

#: The trader's settings: technical signals only (no forecast task in this DAG), loose enough that the synthetic
#: market gives orders at the default ``as_of``; simulated costs given, so no Variable decides them.
TRADER_ARGS: dict[str, Any] = {
    "timeframe": "1Day", "sources": "synthetic", "broker_conn_id": "simulated", "forecast_model": None,
    "weights": {"technical": 1.0}, "min_score": 0.02, "fraction": 0.05,
    "risk_limits": {"min_confidence": 0.05, "max_order_notional": 50_000.0},
    "slippage_bps": 5.0, "commission_bps": 1.0,
}


@dataclass
class Pause:
    """A pause planned for this task try (:func:`planned_pause`); :meth:`hold` pauses once.

    :param kind: the moment (``record-send``, ``send-answer``, ``etl``).
    :param marker: the marker file.
    :param seconds: the longest wait.
    :param task: the try's ``dag_id``, ``run_id``, ``task_id``, ``map_index``, ``try_number`` (in the marker).
    """

    kind: str
    marker: Path
    seconds: float
    task: dict[str, Any] = field(default_factory=dict)
    used: bool = False

    def hold(self, log: Any, **details: Any) -> bool:
        """Write the marker (with ``details``) and wait ``seconds`` or until the marker is removed; at most once.

        :return: whether it paused (False: already used, or another task created the marker first).
        """
        if self.used:
            return False
        self.used = True
        payload = {"pause": self.kind, "pid": os.getpid(),
                   "worker": os.environ.get("PORTFOLIO_WORKER_NAME") or socket.gethostname(),
                   **self.task, "at": datetime.now(timezone.utc).isoformat(), **details}
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        draft = self.marker.with_name(f".{self.marker.name}.{os.getpid()}.draft")
        draft.write_text(json.dumps(payload, default=str))
        try:
            os.link(draft, self.marker)  # whole, and only if no one created it before
        except FileExistsError:
            log.warning("Fault pause %s: marker %s exists already (another task paused): not pausing", self.kind,
                        self.marker)
            return False
        finally:
            draft.unlink(missing_ok=True)
        log.warning("Fault pause %s: marker %s written (%s); waiting up to %g s or until it is removed", self.kind,
                    self.marker, details, self.seconds)
        deadline = time.monotonic() + self.seconds
        while self.marker.exists():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(POLL_S, left))
        log.warning("Fault pause %s: carrying on", self.kind)
        return True


def planned_pause(context: Any, kinds: tuple[str, ...], default_s: float, log: Any) -> Pause | None:
    """The pause the run's conf (over the params) asks of this try: one of ``kinds`` on the first try, else ``None``.

    :raises ValueError: for a pause without ``marker``, or a ``pause_s`` that is not a number of seconds >= 0.
    """
    conf = {**(context.get("params") or {}), **(getattr(context["dag_run"], "conf", None) or {})}
    kind = str(conf.get("pause") or "none")
    if kind not in kinds:
        return None
    ti = context.get("ti")
    try_number = int(getattr(ti, "try_number", 1) or 1)
    if try_number != 1:
        log.info("Fault pause %s: try %d runs normally", kind, try_number)
        return None
    marker = str(conf.get("marker") or "").strip()
    if not marker:
        raise ValueError(f"conf pause={kind!r} needs 'marker': the path of the marker file the paused task writes")
    seconds = float(conf.get("pause_s", default_s))
    if not seconds >= 0:
        raise ValueError(f"conf pause_s must be a number of seconds >= 0, got {conf.get('pause_s')!r}")
    run = context["dag_run"]
    map_index = getattr(ti, "map_index", None)
    return Pause(kind, Path(marker), seconds, {
        "dag_id": run.dag_id, "run_id": run.run_id, "task_id": getattr(ti, "task_id", None),
        "map_index": -1 if map_index is None else int(map_index), "try_number": try_number})


class PausingTrader(AutoTraderOperator):
    """:class:`AutoTraderOperator` that pauses at ``record-send`` or ``send-answer`` on its first try (module
    docstring); ``simulated_account`` is templated too.

    :param pause_s: the longest pause when the conf does not say.
    """

    template_fields = (*AutoTraderOperator.template_fields, "simulated_account")

    def __init__(self, *, pause_s: float = DEFAULT_PAUSE_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause_s = pause_s

    def execute(self, context: Any) -> dict[str, Any]:
        pause = planned_pause(context, TRADE_PAUSES, self.pause_s, self.log)
        if pause is None:
            return super().execute(context)
        from unittest import mock

        from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

        real_submit = SimulatedBroker.submit

        def submit(broker: Any, request: Any) -> Any:
            if pause.used:  # the first order only
                return real_submit(broker, request)
            details = {"client_order_id": request.client_order_id, "symbol": request.symbol, "side": request.side,
                       "account": broker.account}
            if pause.kind == "record-send":
                pause.hold(self.log, **details)
                return real_submit(broker, request)
            answer = real_submit(broker, request)
            pause.hold(self.log, **details, status=answer.status)
            return answer

        with mock.patch.object(SimulatedBroker, "submit", submit):
            return super().execute(context)


class PausingETL(PortfolioETLOperator):
    """:class:`PortfolioETLOperator` that pauses after its first symbol's bars are committed, on its first try, with
    ``pause: etl`` (module docstring).

    :param pause_s: the longest pause when the conf does not say.
    """

    def __init__(self, *, pause_s: float = DEFAULT_PAUSE_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause_s = pause_s

    def execute(self, context: Any) -> dict[str, Any]:
        pause = planned_pause(context, ETL_PAUSES, self.pause_s, self.log)
        if pause is None:
            return super().execute(context)
        from unittest import mock

        from airflow_provider_portfolio.store import PortfolioStore

        real_upsert = PortfolioStore.upsert_bars

        def upsert_bars(store: Any, bars: Any) -> int:
            written = real_upsert(store, bars)  # one transaction: committed when it returns
            pause.hold(self.log, symbols=sorted(set(bars["symbol"])), rows=len(bars))
            return written

        with mock.patch.object(PortfolioStore, "upsert_bars", upsert_bars):
            return super().execute(context)


@dag(
    dag_id="cluster_fault_trade",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "execution_timeout": timedelta(minutes=30)},
    params={
        "symbols": Param(12, type="integer", minimum=1),
        "chunk": Param(6, type="integer", minimum=1),
        "start": Param("2024-01-02", type="string"),
        "end": Param("2024-12-31", type="string"),
        "mode": Param("incremental", type="string", enum=["incremental", "full"]),
        "as_of": Param("2024-12-31T15:00:00-05:00", type="string"),
        "account": Param("faults", type="string", minLength=1),
        "pause": Param("none", type="string", enum=["none", *TRADE_PAUSES, *ETL_PAUSES]),
        "marker": Param("", type="string"),
        "pause_s": Param(DEFAULT_PAUSE_S, type="number", minimum=0),
    },
    tags=["test", "cluster"],
)
def cluster_fault_trade():
    parts = task(universe_chunks, task_id="chunks")()
    everything = task(universe_symbols, task_id="symbols")()
    etl = PausingETL.partial(task_id="etl", start="{{ params.start }}", end="{{ params.end }}",
                             mode="{{ params.mode }}", sources="synthetic").expand(symbols=parts)
    trade = PausingTrader(task_id="trade", symbols=everything, as_of="{{ params.as_of }}",
                          simulated_account="{{ params.account }}", **TRADER_ARGS)
    [parts, everything] >> etl >> trade


cluster_fault_trade()
