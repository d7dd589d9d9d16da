"""The report's charts: matplotlib figures of plain numbers, rendered as inline SVG or PNG bytes.

Each chart is a function of lists (no store, no frames) returning a :class:`matplotlib.figure.Figure`;
:func:`inline_svg` and :func:`png` render one. Figures are made with :class:`~matplotlib.figure.Figure` directly
(never ``pyplot``: no global figure registry, no GUI backend, safe in a worker), PNGs with the Agg renderer.
SVG keeps text as ``<text>`` (``svg.fonttype = none``: small, searchable) and a fixed hash salt, so the same numbers
give the same bytes; :func:`inline_svg` strips what an inline ``<svg>`` in HTML does not need (the XML declaration,
the DOCTYPE, the metadata block, namespace declarations and the fixed size), so the report holds no URL at all.

matplotlib is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from matplotlib.figure import Figure

__all__ = ["COLORS", "empty_chart", "equity_drawdown_chart", "exposure_chart", "forecast_health_chart",
           "inline_svg", "pnl_chart", "png"]

#: The report's palette (also its CSS's).
COLORS = {"equity": "#1f5fa8", "drawdown": "#c0392b", "period": "#f3d9a4", "long": "#2e7d32", "short": "#c0392b",
          "realised": "#1f5fa8", "unrealised": "#8e9fb5", "healthy": "#2e7d32", "unhealthy": "#c0392b",
          "insufficient_data": "#b0b7c3", "grid": "#d9dde3", "text": "#333333"}
_RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "airflow-provider-portfolio", "font.size": 9,
       "axes.edgecolor": "#9aa3ad", "axes.labelcolor": COLORS["text"], "xtick.color": COLORS["text"],
       "ytick.color": COLORS["text"], "axes.spines.top": False, "axes.spines.right": False}
_XML_HEAD = re.compile(r"\A\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_ROOT = re.compile(r"<svg\b[^>]*>")
_ROOT_DROP = re.compile(r'\s(?:xmlns(?::\w+)?|width|height|version)="[^"]*"')
_MAX_BARS = 40


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]  # keys typed as literals by matplotlib
        yield


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, *, left: float = 0.9, bottom: float = 0.45,
            top: float = 0.35, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure with fixed margins, in inches (a layout engine measures every label first and doubles the cost of
    drawing)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, **kwargs)
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=bottom / height, top=1 - top / height,
                        hspace=0.12 if rows > 1 else 0.2, wspace=0.45)
    return fig, axes


def inline_svg(fig: Figure, *, label: str, prefix: str = "") -> str:
    """``fig`` as an ``<svg>`` element for an HTML page: scalable (``viewBox``, width set by CSS), labelled for
    screen readers, no URL anywhere (no DOCTYPE, metadata or namespace declarations: the HTML parser puts an inline
    ``<svg>`` and its ``xlink:href`` in their namespaces itself).

    :param label: what the chart shows (``aria-label``; escaped here).
    :param prefix: put before every ``id`` and every reference to one, so several charts in one page never share
        an id (matplotlib names its groups ``figure_1``, ``axes_1``... in every figure).
    """
    from html import escape

    buffer = io.StringIO()
    with _style():
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = _METADATA.sub("", _XML_HEAD.sub("", buffer.getvalue()))
    if prefix:
        text = (text.replace(' id="', f' id="{prefix}').replace('href="#', f'href="#{prefix}')
                .replace("url(#", f"url(#{prefix}"))
    root = _ROOT.search(text)
    if root is None:  # matplotlib always writes one; a guard, not a branch the report relies on
        raise ValueError("matplotlib wrote no <svg> element")
    tag = _ROOT_DROP.sub("", root.group(0))
    tag = tag[:-1].rstrip() + f' class="chart" role="img" aria-label="{escape(label, quote=True)}">'
    return text[:root.start()] + tag + text[root.end():]


def png(fig: Figure, *, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (the Agg renderer), without a timestamp in its metadata."""
    buffer = io.BytesIO()
    with _style():
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def equity_drawdown_chart(ts: Sequence[datetime], equity: Sequence[float], drawdown: Sequence[float], *,
                          period_start: datetime | None = None, title: str = "", tz: str = "UTC") -> Figure:
    """Equity above, its drawdown below (a fraction of the running peak, drawn as a negative percentage), the
    report's period shaded in both.

    :param ts: the snapshots' instants, oldest first (aware).
    :param equity: equity at each instant.
    :param drawdown: the fall from the running peak at each instant (0.1 = 10 % below).
    :param period_start: where the report's period begins (shaded from it to the last instant).
    :param tz: the time zone of the dates on the axis (the exchange's).
    """
    from zoneinfo import ZoneInfo

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import FuncFormatter

    with _style():
        fig, (top, bottom) = _figure(8.0, 4.2, 2, left=0.95, bottom=0.4, sharex=True, height_ratios=[2.2, 1])
        top.plot(list(ts), list(equity), color=COLORS["equity"], linewidth=1.6,
                 marker="o" if len(ts) <= 2 else None, markersize=3)
        top.set_ylabel("equity")
        locator = AutoDateLocator(tz=ZoneInfo(tz), maxticks=9)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=ZoneInfo(tz)))
        top.grid(True, color=COLORS["grid"], linewidth=0.6)
        if title:
            top.set_title(title, loc="left", fontsize=10, color=COLORS["text"])
        top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        percent = [-100.0 * d for d in drawdown]
        bottom.fill_between(list(ts), percent, 0.0, color=COLORS["drawdown"], alpha=0.35, linewidth=0)
        bottom.plot(list(ts), percent, color=COLORS["drawdown"], linewidth=1.0)
        bottom.set_ylabel("drawdown %")
        bottom.set_ylim(min(min(percent, default=0.0) * 1.15, -1.0), 0.5)
        bottom.grid(True, color=COLORS["grid"], linewidth=0.6)
        if period_start is not None and ts:
            for ax in (top, bottom):
                ax.axvspan(max(period_start, ts[0]), ts[-1], color=COLORS["period"], alpha=0.45, linewidth=0,
                           zorder=0)
    return fig


def _limited(rows: Sequence[tuple[Any, ...]], key: int) -> list[tuple[Any, ...]]:
    """The :data:`_MAX_BARS` rows largest in absolute ``row[key]``, kept in their order."""
    if len(rows) <= _MAX_BARS:
        return list(rows)
    keep = set(sorted(range(len(rows)), key=lambda i: -abs(float(rows[i][key])))[:_MAX_BARS])
    return [r for i, r in enumerate(rows) if i in keep]


def exposure_chart(by_symbol: Sequence[tuple[str, float]], by_class: Sequence[tuple[str, float]]) -> Figure:
    """Market value of each position (long green, short red) and net value by asset class, horizontal bars.

    :param by_symbol: (symbol, signed market value); the largest :data:`_MAX_BARS` in absolute value are drawn.
    :param by_class: (asset class, signed market value).
    """
    rows = _limited(by_symbol, 1)
    with _style():
        fig, (left, right) = _figure(8.0, max(2.4, 0.28 * len(rows) + 1.0), 1, 2, width_ratios=[2.4, 1])
        names = [r[0] for r in rows][::-1]
        values = [float(r[1]) for r in rows][::-1]
        left.barh(names, values, color=[COLORS["long"] if v >= 0 else COLORS["short"] for v in values])
        left.axvline(0, color="#9aa3ad", linewidth=0.8)
        left.set_title("market value by symbol", loc="left", fontsize=10, color=COLORS["text"])
        left.grid(True, axis="x", color=COLORS["grid"], linewidth=0.6)
        classes = [c for c, _ in by_class]
        totals = [float(v) for _, v in by_class]
        right.bar(classes, totals, width=0.6, color=[COLORS["long"] if v >= 0 else COLORS["short"] for v in totals])
        right.axhline(0, color="#9aa3ad", linewidth=0.8)
        right.set_title("net by asset class", loc="left", fontsize=10, color=COLORS["text"])
        right.grid(True, axis="y", color=COLORS["grid"], linewidth=0.6)
    return fig


def pnl_chart(rows: Sequence[tuple[str, float, float]]) -> Figure:
    """Realised and unrealised P&L of each symbol, side by side (horizontal bars).

    :param rows: (symbol, realised, unrealised); the largest :data:`_MAX_BARS` by total are drawn.
    """
    import numpy as np

    shown = _limited([(s, r + u, r, u) for s, r, u in rows], 1)
    with _style():
        fig, ax = _figure(8.0, max(2.2, 0.36 * len(shown) + 1.0), top=0.45)
        y = np.arange(len(shown))[::-1]
        ax.barh(y + 0.19, [r[2] for r in shown], height=0.38, color=COLORS["realised"], label="realised")
        ax.barh(y - 0.19, [r[3] for r in shown], height=0.38, color=COLORS["unrealised"], label="unrealised")
        ax.set_yticks(y, [r[0] for r in shown])
        ax.axvline(0, color="#9aa3ad", linewidth=0.8)
        ax.grid(True, axis="x", color=COLORS["grid"], linewidth=0.6)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False, borderaxespad=0.2)
    return fig


def forecast_health_chart(models: Sequence[tuple[str, int, int, int]]) -> Figure:
    """How many symbols each model is healthy, unhealthy or without enough data for (stacked bars).

    :param models: (model, healthy, unhealthy, insufficient data).
    """
    rows = list(models)[:_MAX_BARS][::-1]
    with _style():
        fig, ax = _figure(8.0, max(2.0, 0.32 * len(rows) + 1.2), top=0.45)
        names = [r[0] for r in rows]
        left = [0.0] * len(rows)
        for i, label in enumerate(("healthy", "unhealthy", "insufficient_data"), start=1):
            counts = [float(r[i]) for r in rows]
            ax.barh(names, counts, left=left, color=COLORS[label], label=label.replace("_", " "))
            left = [a + b for a, b in zip(left, counts, strict=True)]
        ax.set_xlabel("symbols")
        ax.grid(True, axis="x", color=COLORS["grid"], linewidth=0.6)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False, borderaxespad=0.2)
    return fig


def empty_chart(message: str) -> Figure:
    """A chart-sized panel saying why there is nothing to draw (the headline PNG of an empty book)."""
    with _style():
        fig, ax = _figure(8.0, 4.2)
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=12, color=COLORS["text"])
    return fig
