"""The Portfolio page's FastAPI app, mounted by the provider's plugin at ``/portfolio`` in Airflow's api-server.

Routes (relative to the mount): ``GET /`` the page (:mod:`~airflow_provider_portfolio.ui.page`), and its JSON under
``/api``: ``book``, ``equity``, ``orders``, ``decisions``, ``forecast-health``, ``freshness`` (what they hold:
:class:`~airflow_provider_portfolio.ui.queries.PortfolioReader`).

- Only signed-in Airflow users: every route depends on :data:`require_reader`, Airflow's own check that the user
  (from the ``Authorization: Bearer`` JWT, else the ``_token`` cookie the UI's sign-in sets) may read DAGs. A plugin's
  app is not protected by Airflow on its own. Signed out: 401 (or 403 for a bad token), never data; the page then
  answers a short HTML note with a link to sign in.
- The store is the one the provider's jobs use (:class:`~airflow_provider_portfolio.hooks.store.PortfolioStoreHook`'s
  resolution: ``[portfolio] store_conn_id``, else the embedded SQLite file under ``$AIRFLOW_HOME``), opened once per
  process and shared; never migrated nor created here.
- The store is read in Airflow's threadpool, never on the event loop: the endpoints are plain ``def``.
- Errors are JSON ``{"detail": ...}``: 422 for a bad parameter (an unknown account), 503 when the store cannot be
  read; a store not created yet, or empty, answers 200 with empty content and a ``message``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_portfolio.exceptions import InvalidInputError, StoreError
from airflow_provider_portfolio.ui import queries
from airflow_provider_portfolio.ui.page import PAGE_HTML, SIGNED_OUT_HTML

if TYPE_CHECKING:
    from airflow_provider_portfolio.store import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["StoreSource", "app", "create_app", "require_reader"]

#: Every route's dependency: a signed-in Airflow user allowed to read DAGs (``GET`` on DAGs, none named: the desk's
#: book is about all its DAGs; with ``?dag_id=`` Airflow checks that DAG). Tests override it in
#: ``app.dependency_overrides``.
require_reader = requires_access_dag("GET")


def _airflow_store() -> PortfolioStore:
    """The provider's store as its jobs resolve it, not migrated (the page only reads)."""
    from airflow_provider_portfolio.hooks.store import PortfolioStoreHook
    from airflow_provider_portfolio.store import PortfolioStore

    hook = PortfolioStoreHook()
    return PortfolioStore(hook.url, **hook.store_options)


class StoreSource:
    """The page's :class:`~airflow_provider_portfolio.ui.queries.PortfolioReader`, made on first use and shared by
    every request (thread-safe). A store that cannot be resolved (a named connection missing, a timeout option that is
    not seconds) raises :class:`StoreError` and is asked again on the next request.

    :param factory: makes the store (default: the provider's store as its jobs resolve it).
    """

    def __init__(self, factory: Callable[[], PortfolioStore] = _airflow_store) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._reader: queries.PortfolioReader | None = None

    def reader(self) -> queries.PortfolioReader:
        with self._lock:
            if self._reader is None:
                try:
                    store = self._factory()
                except InvalidInputError as err:  # the deployment's settings, not the request, are wrong
                    raise StoreError(f"the portfolio store is not configured right: {err}") from None
                self._reader = queries.PortfolioReader(store)
                log.info("Portfolio page reads the store %s", self._reader.store.url)
            return self._reader


def _reader(request: Request) -> queries.PortfolioReader:
    source: StoreSource = request.app.state.store_source
    return source.reader()


Reader = Annotated[queries.PortfolioReader, Depends(_reader)]
Account = Annotated[str | None, Query(max_length=128, description="Ledger account; default: the one snapshotted last")]
Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="The most rows returned")]
Timeframe = Annotated[str, Query(max_length=16, description="Timeframe, e.g. 1Day, 1Hour, 15Min")]
_JSON_HEADERS = {"Cache-Control": "no-store"}


def _json(content: dict[str, Any]) -> JSONResponse:
    return JSONResponse(content, headers=_JSON_HEADERS)


def create_app(store_source: StoreSource | None = None) -> FastAPI:
    """The Portfolio app.

    :param store_source: where the store comes from (default: the provider's store, :class:`StoreSource`).
    """
    app = FastAPI(title="Portfolio", description="The desk's book, equity, orders, decisions and health.",
                  docs_url=None, redoc_url=None, openapi_url=None,  # unauthenticated otherwise
                  dependencies=[Depends(require_reader)])
    app.state.store_source = store_source or StoreSource()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403) and request.scope.get("endpoint") is page:
            return HTMLResponse(SIGNED_OUT_HTML, status_code=exc.status_code, headers=_JSON_HEADERS)
        return await http_exception_handler(request, exc)

    @app.exception_handler(InvalidInputError)
    async def _bad_input(request: Request, exc: InvalidInputError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422, headers=_JSON_HEADERS)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        log.warning("Portfolio page: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers=_JSON_HEADERS)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML, headers=_JSON_HEADERS)

    @app.get("/api/book")
    def book(reader: Reader, account: Account = None,
             limit: Annotated[int, Query(ge=1, le=queries.MAX_POSITIONS)] = queries.DEFAULT_POSITIONS) -> JSONResponse:
        """Cash, positions (largest first) and equity of an account."""
        return _json(reader.book(account, limit=limit))

    @app.get("/api/equity")
    def equity(reader: Reader, account: Account = None,
               days: Annotated[int, Query(ge=1, le=queries.MAX_EQUITY_DAYS)] = queries.DEFAULT_EQUITY_DAYS,
               points: Annotated[int, Query(ge=queries.MIN_EQUITY_POINTS, le=queries.MAX_EQUITY_POINTS)]
               = queries.DEFAULT_EQUITY_POINTS) -> JSONResponse:
        """The equity curve over the window before its last snapshot, downsampled, with its drawdown."""
        return _json(reader.equity(account, days=days, points=points))

    @app.get("/api/orders")
    def orders(reader: Reader, account: Account = None, limit: Limit = queries.DEFAULT_LIMIT) -> JSONResponse:
        """The newest orders."""
        return _json(reader.orders(account, limit=limit))

    @app.get("/api/decisions")
    def decisions(reader: Reader, account: Account = None,
                  dag_id: Annotated[str | None, Query(max_length=250)] = None,
                  limit: Limit = queries.DEFAULT_LIMIT) -> JSONResponse:
        """The newest trading decisions with their risk verdicts."""
        return _json(reader.decisions(account, dag_id=dag_id, limit=limit))

    @app.get("/api/forecast-health")
    def forecast_health(reader: Reader, timeframe: Timeframe = "1Day",
                        limit: Limit = queries.DEFAULT_LIMIT) -> JSONResponse:
        """Model evaluations per model and per symbol (worst first), with monitoring's verdicts."""
        return _json(reader.forecast_health(timeframe=timeframe, limit=limit))

    @app.get("/api/freshness")
    def freshness(reader: Reader, timeframe: Timeframe = "1Day", limit: Limit = queries.DEFAULT_LIMIT) -> JSONResponse:
        """The last bar of each symbol, stalest first, with monitoring's verdicts."""
        return _json(reader.freshness(timeframe=timeframe, limit=limit))

    return app


#: The app the plugin mounts (one per api-server process).
app = create_app()
