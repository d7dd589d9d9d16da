"""News with sentiment: one small normalised record for every vendor, and a lexicon scorer.

Alpha Vantage ``NEWS_SENTIMENT`` gives a score per ticker; Alpaca news and Finnhub company news give
none, so their headlines (and summaries) are scored with :func:`score_text`, a documented lexicon
method: count the positive and negative finance words of :data:`POSITIVE` and :data:`NEGATIVE`
(a negation such as "not" or "no" within the two words before flips a word), and map the counts to
``(pos - neg) / (pos + neg + 2)``, which lies in (-1, 1), is 0 for neutral text and saturates slowly
so one word never reads as certainty. The synthetic market has a matching deterministic feed
(:func:`synthetic_news`). Plain Python: never imports Airflow.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import utc_date_range

#: Finance words that read as good news for the ticker.
POSITIVE = frozenset(
    """
    beat beats beating exceed exceeds exceeded surge surges surged soar soars soared jump jumps jumped
    rally rallies rallied gain gains gained rise rises rising rose record upgrade upgrades upgraded
    outperform outperforms strong stronger strongest growth grow grows grew profit profits profitable
    bullish boost boosts boosted raise raises raised expand expands expansion win wins won approval
    approved breakthrough optimistic optimism rebound rebounds rebounded recovery recover recovers
    buyback dividend higher top tops positive robust momentum upbeat
    """.split()
)
#: Finance words that read as bad news for the ticker.
NEGATIVE = frozenset(
    """
    miss misses missed fall falls fell drop drops dropped plunge plunges plunged slump slumps slumped
    decline declines declined loss losses lose loses lost downgrade downgrades downgraded underperform
    weak weaker weakest cut cuts cutting lawsuit sue sued probe investigation fraud recall recalls
    bearish warn warns warning layoffs layoff bankruptcy default defaults lower negative concern
    concerns risk risks slowdown crash crashes crashed halt halted delay delayed fine fined penalty
    tumble tumbles tumbled sink sinks sank selloff
    """.split()
)
_NEGATIONS = frozenset({"not", "no", "never", "without", "isn't", "wasn't", "didn't", "doesn't", "won't", "fails"})
_WORD = re.compile(r"[a-z][a-z'\-]*")


@dataclass(frozen=True)
class NewsItem:
    """One headline about one symbol.

    :param symbol: the ticker the item is about.
    :param published: when it was published (UTC).
    :param headline: the headline.
    :param score: sentiment in [-1, 1] (negative bad, positive good for the symbol).
    :param source: where it came from (``alphavantage``, ``alpaca``, ``finnhub``, ``synthetic``).
    :param url: link to the article, when the vendor gives one.
    :param vendor_score: the vendor's own score for the symbol, when it scores news (Alpha Vantage's
        ``ticker_sentiment_score``); ``None`` when ``score`` is the lexicon's.
    """

    symbol: str
    published: datetime
    headline: str
    score: float
    source: str
    url: str | None = None
    vendor_score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.published, datetime) or self.published.tzinfo is None:
            raise InvalidInputError(f"published must be a tz-aware datetime, got {self.published!r}")
        if not (isinstance(self.score, (int, float)) and math.isfinite(self.score) and -1 <= self.score <= 1):
            raise InvalidInputError(f"score must lie in [-1, 1], got {self.score!r}")
        object.__setattr__(self, "published", self.published.astimezone(timezone.utc))
        object.__setattr__(self, "score", float(self.score))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``published`` as ISO 8601)."""
        out = asdict(self)
        out["published"] = self.published.isoformat()
        return out


def score_text(*texts: str | None) -> float:
    """Lexicon sentiment of ``texts`` together, in (-1, 1); 0.0 when no lexicon word occurs.

    :param texts: headline, summary...; ``None`` and empty strings are skipped.
    """
    pos = neg = 0
    for text in texts:
        if not text:
            continue
        words = _WORD.findall(text.lower())
        for i, word in enumerate(words):
            polarity = 1 if word in POSITIVE else -1 if word in NEGATIVE else 0
            if polarity and any(w in _NEGATIONS for w in words[max(0, i - 2) : i]):
                polarity = -polarity
            pos += polarity > 0
            neg += polarity < 0
    return (pos - neg) / (pos + neg + 2)


def sort_news(items: Iterable[NewsItem]) -> list[NewsItem]:
    """Items ordered by publication time, then symbol and headline (a stable, vendor-independent order)."""
    return sorted(items, key=lambda n: (n.published, n.symbol, n.headline))


_SYNTHETIC_TEMPLATES = (
    ("{s} beats estimates as revenue growth accelerates", 1),
    ("{s} shares rally after analyst upgrade", 1),
    ("{s} announces buyback and raises dividend", 1),
    ("{s} holds annual meeting; guidance unchanged", 0),
    ("{s} files quarterly report", 0),
    ("{s} misses estimates, cuts outlook", -1),
    ("{s} shares fall on regulatory probe", -1),
    ("{s} warns of slowdown in key market", -1),
)


def synthetic_news(symbols: Sequence[str], start: date | datetime, end: date | datetime, *, seed: int = 0,
                   per_day: float = 0.6) -> list[NewsItem]:
    """A deterministic news feed for the synthetic market: same (seed, symbol, day) -> same items.

    Each symbol gets 0 to 2 items a calendar day (``per_day`` on average at most 1), drawn from a
    hash of (seed, symbol, day), so any split of a range gives the same items. Scores come from
    :func:`score_text`, like the vendors without scores.

    :raises InvalidInputError: when ``start`` is after ``end``.
    """
    first, last = utc_date_range(start, end)
    items = []
    day = first
    while day <= last:
        for symbol in symbols:
            digest = hashlib.blake2b(f"{seed}|{symbol}|{day.isoformat()}".encode(), digest_size=16).digest()
            count = sum(b < 256 * per_day / 2 for b in digest[:2])
            for k in range(count):
                template, _ = _SYNTHETIC_TEMPLATES[digest[2 + k] % len(_SYNTHETIC_TEMPLATES)]
                minute = int.from_bytes(digest[4 + 2 * k : 6 + 2 * k], "big") % (24 * 60)
                headline = template.format(s=symbol)
                items.append(
                    NewsItem(
                        symbol=symbol,
                        published=datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=minute),
                        headline=headline,
                        score=score_text(headline),
                        source="synthetic",
                    )
                )
        day += timedelta(days=1)
    return sort_news(items)

