"""The provider's Airflow Variables: every ``portfolio.*`` setting a DAG reads, with its documented default.

Variables hold what a desk changes while it runs (the universe, the kill switch, the health thresholds);
deployment-wide settings live in the ``[portfolio]`` config section (:mod:`airflow_provider_portfolio.config`).
``python -m airflow_provider_portfolio setup`` creates the Variables that are missing with these defaults and
never overwrites one a user set. Readers go through :func:`get_variable`, so an unset Variable means its
default everywhere. Importing this module costs nothing: Airflow is imported inside the function.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The universe of the example DAGs when ``portfolio.default_tickers`` is unset.
DEFAULT_TICKERS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "SPY", "QQQ", "IWM", "BTC/USD"]


@dataclass(frozen=True)
class VariableSpec:
    """A ``portfolio.*`` Variable: its name, its default (as stored, text) and what it does."""

    name: str
    default: str
    description: str


#: Every Variable the provider reads, by name.
VARIABLES: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec(
            "portfolio.default_tickers",
            ",".join(DEFAULT_TICKERS),
            "The desk's universe: a JSON list or comma-separated tickers (crypto pairs as BTC/USD). Read when a "
            "task runs, never at parse time.",
        ),
        VariableSpec(
            "portfolio.kill_switch",
            "active",
            "active: trade normally; reduce_only: only orders that shrink a position; halted: no orders at all. "
            "Anything else, or an unreadable Variable, trades as halted.",
        ),
        VariableSpec(
            "portfolio.health_thresholds",
            "{}",
            "JSON object overriding the monitoring thresholds (see the README, 'Health monitoring'); {} keeps "
            "the documented defaults. A malformed value fails the monitoring task naming the key.",
        ),
        VariableSpec(
            "portfolio.simulated_costs",
            "{}",
            "JSON object asset class -> the simulated broker's costs, e.g. {\"equity\": {\"commission_bps\": 0.5, "
            "\"slippage_bps\": 4}, \"crypto\": {...}}: what AutoTraderOperator uses when its own commission_bps or "
            "slippage_bps is not given (the highest of the universe's classes; {} keeps its defaults, 0 and 5). "
            "Written by TransactionCostsOperator(apply=True) from the measured costs (see the README, "
            "'Transaction costs'). A malformed value fails the trader naming the key.",
        ),
        VariableSpec(
            "portfolio.trading_settings",
            "{}",
            "JSON object of the live trading settings AutoTraderOperator lays over its own arguments: min_confidence, "
            "min_score, weights ({\"technical\": .., \"forecast\": .., \"sentiment\": ..}), max_position_fraction, "
            "max_open_positions, daily_loss_limit, fraction, and source (the study it came from); {} keeps the "
            "operator's. Written only by portfolio_threshold_sweep or portfolio_strategy_optimization run with "
            "apply=True (see the README, 'Threshold sweep'). A malformed value fails the trader naming the key.",
        ),
        VariableSpec(
            "portfolio.synthetic_dataset_id",
            "latest",
            "The synthetic dataset to run on: a dataset id under [portfolio] synthetic_dir, or latest (what its "
            "'latest' file names). portfolio_synthetic_refresh sets it to the dataset it made latest.",
        ),
        VariableSpec(
            "portfolio.retention_days",
            "{}",
            "JSON object table -> days of store rows the housekeeping job keeps (null: keep every row), over the "
            "defaults: forecasts, model_evaluations, signal_validations and opportunities 180, health_reports 90, "
            "studies 365, bars and the trading ledger kept "
            "(see the README, 'Housekeeping'). A malformed value fails the housekeeping task before anything is "
            "deleted.",
        ),
    )
}


#: The universe as a templated operator argument: Variable ``portfolio.default_tickers`` when the task runs, else
#: its default (never read at parse time).
TICKERS_TEMPLATE = "{{ var.value.get('portfolio.default_tickers', '" + VARIABLES["portfolio.default_tickers"].default + "') }}"


def get_variable(name: str) -> str:
    """Variable ``name`` as text, its documented default when unset.

    :param name: a key of :data:`VARIABLES`.
    :raises KeyError: for a Variable the provider does not declare.
    """
    spec = VARIABLES[name]
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return spec.default if value is None else str(value)
