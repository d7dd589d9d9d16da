"""Transaction costs, hand-checked: a known fill history gives known commission and slippage in basis points per
symbol and per asset class; slippage is signed against the side; estimates below the minimum sample are flagged and
recommend nothing; an empty history gives a clear result; the simulated costs a universe gets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.ledger import TradingLedger
from airflow_provider_portfolio.trading.accounting import apply_fill
from airflow_provider_portfolio.trading.costs import (
    asset_class,
    costs_for_universe,
    estimate_costs,
    parse_simulated_costs,
)

UTC = timezone.utc
T0 = datetime(2024, 6, 3, 19, 0, tzinfo=UTC)
ACCOUNT = "simulated:desk"

#: (id, symbol, side, qty, reference price, fill price, commission; None: a real broker's fill, no fills row).
#: Slippage in basis points, against the side: +10, +10 (a sell 0.20 below 200), -5 (a buy below its reference),
#: +10, +20; crypto +5, +10. Commissions are 5 bps (equities) and 10 bps (crypto) of the fill's notional.
HISTORY = [
    ("o1", "AAPL", "buy", 10.0, 100.0, 100.10, 0.5005),
    ("o2", "AAPL", "sell", 10.0, 200.0, 199.80, 0.999),
    ("o3", "AAPL", "buy", 5.0, 100.0, 99.95, 0.249875),
    ("o4", "MSFT", "buy", 2.0, 400.0, 400.40, 0.4004),
    ("o5", "BTC/USD", "buy", 0.5, 60_000.0, 60_030.0, 30.015),
    ("o6", "BTC/USD", "sell", 0.5, 61_000.0, 60_939.0, 30.4695),
    ("o7", "MSFT", "buy", 1.0, 400.0, 400.80, None),
]


def record(store: PortfolioStore, history=HISTORY, account: str = ACCOUNT, start: datetime = T0) -> None:
    ledger = TradingLedger(store)
    ledger.open_account(account, 1_000_000.0)
    for i, (cid, symbol, side, qty, ref, price, commission) in enumerate(history):
        ledger.record_intents([{"account": account, "client_order_id": cid, "dag_id": "trader", "run_id": f"r{i}",
                                "symbol": symbol, "side": side, "qty": qty, "ref_price": ref, "bar_ts": start,
                                "created_at": start + timedelta(days=i)}])
        if commission is None:  # a real broker: the order's filled quantity and average price
            ledger.update_order(account, cid, status="filled", filled_qty=qty, filled_avg_price=price)
            continue
        ledger.accept(account, cid, f"sim-{cid}")
        ledger.fill(account, cid, price=price, commission=commission, bar_ts=start + timedelta(days=i, hours=14),
                    rule=apply_fill)


def weighted(bps: list[float], notional: list[float]) -> float:
    return sum(b * n for b, n in zip(bps, notional, strict=True)) / sum(notional)


def test_a_known_history_gives_known_costs_per_symbol_and_asset_class(store):
    record(store)
    report = estimate_costs(store, account=ACCOUNT, min_fills=3, dag_id="portfolio_transaction_costs",
                            run_id="scheduled__1")
    assert (report.status, report.fills, report.account) == ("ok", 7, ACCOUNT)
    aapl, msft, btc = report.symbols["AAPL"], report.symbols["MSFT"], report.symbols["BTC/USD"]
    # AAPL: notional 1001 + 1998 + 499.75; commission 1.749375 = 5 bps of it
    assert (aapl.fills, aapl.buys, aapl.sells, aapl.enough) == (3, 2, 1, True)
    assert aapl.notional == pytest.approx(3498.75) and aapl.commission == pytest.approx(1.749375)
    assert aapl.commission_bps == pytest.approx(5.0)
    assert aapl.slippage_bps_mean == pytest.approx(5.0) and aapl.slippage_bps_median == pytest.approx(10.0)
    assert aapl.slippage_bps_p90 == pytest.approx(10.0)  # sorted -5, 10, 10: at 1.8 of 2, between two tens
    assert aapl.slippage_bps == pytest.approx(weighted([10, 10, -5], [1001, 1998, 499.75]))  # 7.857449
    assert aapl.slippage_bps == pytest.approx(7.857449, abs=1e-6)
    # MSFT: one simulated fill (commission known) and one real broker's (not): 5 bps of the known notional only
    assert (msft.fills, msft.commission_known, msft.slippage_known, msft.enough) == (2, 1, 2, False)
    assert msft.notional == pytest.approx(800.8 + 400.8) and msft.commission_bps == pytest.approx(5.0)
    assert msft.slippage_bps_mean == pytest.approx(15.0) and msft.slippage_bps_median == pytest.approx(15.0)
    # BTC/USD: +5 and +10 bps; commission 10 bps; two fills: flagged
    assert (btc.asset_class, btc.fills, btc.enough) == ("crypto", 2, False)
    assert btc.commission_bps == pytest.approx(10.0) and btc.slippage_bps_mean == pytest.approx(7.5)
    assert btc.slippage_bps_p90 == pytest.approx(9.5)  # 5 + 0.9 * (10 - 5)

    equity, crypto = report.asset_classes["equity"], report.asset_classes["crypto"]
    assert (equity.fills, equity.commission_known, equity.slippage_known, equity.enough) == (5, 4, 5, True)
    assert equity.commission_bps == pytest.approx(5.0)
    assert equity.slippage_bps_mean == pytest.approx(9.0)  # (10 + 10 - 5 + 10 + 20) / 5
    assert equity.slippage_bps_median == pytest.approx(10.0) and equity.slippage_bps_p90 == pytest.approx(16.0)
    assert equity.slippage_bps == pytest.approx(weighted([10, 10, -5, 10, 20], [1001, 1998, 499.75, 800.8, 400.8]))
    assert crypto.enough is False
    # only the asset class with enough fills recommends, rounded to 1e-4 bps
    assert report.recommended == {"equity": {"commission_bps": 5.0, "slippage_bps": round(equity.slippage_bps, 4)}}
    assert "crypto 2 fill(s) (fewer than 3: flagged)" in report.message

    study = store.latest_study("transaction_costs")
    assert (study.study_id, study.status, study.applied) == ("portfolio_transaction_costs/scheduled__1", "ok", False)
    assert study.recommended == report.recommended
    points = {p.point: p for p in store.study_points("transaction_costs", study.study_id)}
    assert set(points) == {"symbol:AAPL", "symbol:MSFT", "symbol:BTC/USD", "asset_class:equity",
                           "asset_class:crypto"}
    assert points["symbol:AAPL"].metrics["commission_bps"] == pytest.approx(5.0)
    assert points["asset_class:crypto"].params == {"asset_class": "crypto"}
    small = report.to_dict()
    assert small["symbols"] == 3 and set(small["asset_classes"]) == {"equity", "crypto"}
    # a retry of the run leaves one study
    estimate_costs(store, account=ACCOUNT, min_fills=3, dag_id="portfolio_transaction_costs", run_id="scheduled__1")
    assert len(store.studies("transaction_costs")) == 1


def test_slippage_is_signed_against_the_side(store):
    record(store, [("s1", "AAPL", "sell", 1.0, 100.0, 101.0, 0.0), ("s2", "SPY", "buy", 1.0, 100.0, 101.0, 0.0),
                   ("s3", "QQQ", "sell", 1.0, 100.0, 99.0, 0.0), ("s4", "IWM", "buy", 1.0, 100.0, 99.0, 0.0)])
    report = estimate_costs(store, min_fills=1)
    # selling above the reference and buying below it are gains (negative costs); the other two are costs
    assert {s: e.slippage_bps for s, e in report.symbols.items()} == {
        "AAPL": pytest.approx(-100.0), "SPY": pytest.approx(100.0), "QQQ": pytest.approx(100.0),
        "IWM": pytest.approx(-100.0)}
    assert report.asset_classes["equity"].slippage_bps == pytest.approx(0.0, abs=1e-9)
    assert report.recommended == {"equity": {"commission_bps": 0.0, "slippage_bps": 0.0}}


def test_a_window_and_an_account_bound_the_history(store):
    record(store)
    record(store, [("x1", "AAPL", "buy", 1.0, 100.0, 110.0, 0.0)], account="simulated:other")
    # orders are created a day apart from T0: the window [T0 + 1 day, T0 + 3 days] holds o2, o3, o4
    window = estimate_costs(store, account=ACCOUNT, since=T0 + timedelta(days=1), until=T0 + timedelta(days=3))
    assert window.fills == 3 and set(window.symbols) == {"AAPL", "MSFT"}
    assert window.ts == T0 + timedelta(days=3) and window.since == T0 + timedelta(days=1)
    everyone = estimate_costs(store)
    assert everyone.fills == 8 and everyone.account is None
    assert everyone.symbols["AAPL"].fills == 4


def test_too_few_fills_recommend_nothing(store):
    record(store)
    report = estimate_costs(store, min_fills=20)
    assert (report.status, report.recommended) == ("insufficient_data", None)
    assert not any(e.enough for e in [*report.symbols.values(), *report.asset_classes.values()])
    assert store.latest_study("transaction_costs").recommended is None


def test_an_empty_history_gives_a_clear_result(store):
    report = estimate_costs(store, account=ACCOUNT, until=T0)
    assert (report.status, report.fills, report.symbols, report.recommended) == ("insufficient_data", 0, {}, None)
    assert report.message == (f"no filled orders of {ACCOUNT} from the start to 2024-06-03T19:00:00+00:00: no cost "
                              "to measure")
    assert store.latest_study("transaction_costs").status == "insufficient_data"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"since": datetime(2024, 6, 1)}, "since must be timezone-aware"),
    ({"since": T0, "until": T0 - timedelta(days=1)}, "must not be after until"),
    ({"min_fills": 0}, "min_fills must be a whole number >= 1"),
    ({"account": " "}, "account must be a ledger account name"),
])
def test_bad_input_is_refused_before_anything_is_written(store, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        estimate_costs(store, **kwargs)
    assert store.latest_study("transaction_costs") is None


# -- the simulated broker's costs -----------------------------------------------------------------------------
def test_simulated_costs_per_asset_class_and_for_a_universe():
    costs = parse_simulated_costs('{"equity": {"commission_bps": 1, "slippage_bps": 4.5}, '
                                  '"crypto": {"slippage_bps": 12}}', setting="portfolio.simulated_costs")
    assert costs == {"equity": {"commission_bps": 1.0, "slippage_bps": 4.5}, "crypto": {"slippage_bps": 12.0}}
    defaults = {"commission_bps": 0.0, "slippage_bps": 5.0}
    assert costs_for_universe(["AAPL", "MSFT"], costs, **defaults) == {"commission_bps": 1.0, "slippage_bps": 4.5}
    # crypto has no commission: its default (0) competes; the dearest class wins each key
    assert costs_for_universe(["AAPL", "BTC/USD"], costs, **defaults) == {"commission_bps": 1.0,
                                                                          "slippage_bps": 12.0}
    assert costs_for_universe(["ETH/USD"], costs, **defaults) == {"commission_bps": 0.0, "slippage_bps": 12.0}
    assert costs_for_universe([], costs, **defaults) == defaults
    assert costs_for_universe(["AAPL"], {}, **defaults) == defaults
    assert parse_simulated_costs(None) == parse_simulated_costs(" ") == parse_simulated_costs("{}") == {}
    assert (asset_class("BTC/USD"), asset_class("AAPL")) == ("crypto", "equity")


@pytest.mark.parametrize(("value", "match"), [
    ("equity=5", r"v must be a JSON object such as"),
    ('["equity"]', "v must be a JSON object of asset classes"),
    ('{"bonds": {}}', "v: unknown asset class 'bonds'"),
    ('{"equity": 5}', "v: equity must be an object with commission_bps and/or slippage_bps"),
    ('{"equity": {"spread_bps": 1}}', "v: equity: unknown key 'spread_bps'"),
    ('{"equity": {"slippage_bps": -1}}', r"v: equity.slippage_bps must be a number of basis points from 0 to 10000"),
    ('{"crypto": {"commission_bps": "5"}}', "v: crypto.commission_bps must be a number"),
])
def test_malformed_simulated_costs_are_refused_naming_the_key(value, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_simulated_costs(value, setting="v")


def test_the_costs_of_the_simulated_broker_are_recovered(store):
    """Fills of the simulated broker itself (slippage 7 bps of the open, commission 2 bps): the estimate recovers
    them, plus the move from each decision's reference price to the fill bar's open, which is zero here."""
    from airflow_provider_portfolio.trading.brokers.simulated import SimulatedBroker

    ledger = TradingLedger(store)
    broker = SimulatedBroker(ledger, name="sim", slippage_bps=7.0, commission_bps=2.0)
    history = []
    for i in range(6):
        side, ref = ("buy" if i % 3 else "sell"), 100.0 + i
        price = ref * (1 + 7e-4) if side == "buy" else ref * (1 - 7e-4)
        history.append((f"c{i}", "AAPL" if i % 2 else "MSFT", side, 1.0, ref, price, broker.commission(price)))
    record(store, history, account=broker.account)
    report = estimate_costs(store, account=broker.account, min_fills=6)
    equity = report.asset_classes["equity"]
    assert equity.slippage_bps == pytest.approx(7.0) and equity.slippage_bps_median == pytest.approx(7.0)
    assert equity.commission_bps == pytest.approx(2.0)
    assert report.recommended == {"equity": {"commission_bps": 2.0, "slippage_bps": 7.0}}
