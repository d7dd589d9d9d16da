"""News records, the lexicon scorer and the synthetic news feed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.news import NEGATIVE, POSITIVE, NewsItem, score_text, sort_news, synthetic_news
from airflow_provider_portfolio.market.synthetic import SyntheticMarket


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (("Apple beats estimates, shares surge",), 2 / 4),
        (("Tesla misses estimates and cuts outlook",), -2 / 4),
        (("Company files quarterly report",), 0.0),
        (("Profit not strong this quarter",), 0 / 4),  # profit +1, "not strong" -1
        (("Shares rally", "but a lawsuit looms and margins fall"), (1 - 2) / (3 + 2)),
        ((None, ""), 0.0),
    ],
)
def test_score_text_counts_lexicon_words_with_negation(texts, expected):
    assert score_text(*texts) == pytest.approx(expected)


def test_scores_stay_inside_minus_one_to_one():
    assert -1 < score_text(" ".join(sorted(NEGATIVE))) < -0.95
    assert 0.95 < score_text(" ".join(sorted(POSITIVE))) < 1
    assert not POSITIVE & NEGATIVE


def test_news_item_normalises_and_validates():
    eastern = timezone(timedelta(hours=-4))
    item = NewsItem("AAPL", datetime(2024, 6, 3, 9, 30, tzinfo=eastern), "Apple up", 1, "finnhub", "https://x")
    assert item.published == datetime(2024, 6, 3, 13, 30, tzinfo=timezone.utc)
    assert item.score == 1.0 and isinstance(item.score, float)
    assert item.to_dict()["published"] == "2024-06-03T13:30:00+00:00"
    with pytest.raises(InvalidInputError, match="tz-aware"):
        NewsItem("AAPL", datetime(2024, 6, 3), "x", 0.1, "finnhub")
    with pytest.raises(InvalidInputError, match=r"\[-1, 1\]"):
        NewsItem("AAPL", datetime(2024, 6, 3, tzinfo=timezone.utc), "x", 1.5, "finnhub")
    with pytest.raises(InvalidInputError, match=r"\[-1, 1\]"):
        NewsItem("AAPL", datetime(2024, 6, 3, tzinfo=timezone.utc), "x", float("nan"), "finnhub")


def test_synthetic_news_is_deterministic_and_split_invariant():
    whole = synthetic_news(["AAPL", "MSFT", "BTC/USD"], "2024-01-01", "2024-03-31", seed=3)
    pieces = synthetic_news(["AAPL", "MSFT", "BTC/USD"], "2024-01-01", "2024-02-10", seed=3) + synthetic_news(
        ["AAPL", "MSFT", "BTC/USD"], "2024-02-11", "2024-03-31", seed=3
    )
    assert sort_news(pieces) == whole
    assert whole == synthetic_news(["AAPL", "MSFT", "BTC/USD"], "2024-01-01", "2024-03-31", seed=3)
    assert whole != synthetic_news(["AAPL", "MSFT", "BTC/USD"], "2024-01-01", "2024-03-31", seed=4)
    per_symbol_day = len(whole) / (3 * 91)
    assert 0.3 < per_symbol_day < 1.0
    assert {n.source for n in whole} == {"synthetic"}
    assert {n.symbol for n in whole} == {"AAPL", "MSFT", "BTC/USD"}
    assert any(n.score > 0 for n in whole) and any(n.score < 0 for n in whole)
    assert all(n.score == score_text(n.headline) for n in whole)
    assert all(whole[i].published <= whole[i + 1].published for i in range(len(whole) - 1))


def test_synthetic_market_news_uses_its_seed_and_checks_input():
    assert SyntheticMarket(seed=7).news(["AAPL"], "2024-06-01", "2024-06-30") == synthetic_news(
        ["AAPL"], "2024-06-01", "2024-06-30", seed=7
    )
    with pytest.raises(InvalidInputError, match="after end"):
        synthetic_news(["AAPL"], "2024-06-30", "2024-06-01")
    with pytest.raises(InvalidInputError):
        SyntheticMarket().news(42, "2024-06-01", "2024-06-30")
