"""The Portfolio page: one static HTML document with its style and script inline (no CDN, no external asset).

The page holds no data. Its script fetches the app's JSON (``api/book``, ``api/equity``, ``api/orders``,
``api/decisions``, ``api/forecast-health``, ``api/freshness``, relative to the page, so any ``url_prefix`` and base
URL work) with the browser's own Airflow session (the ``_token`` cookie Airflow's sign-in sets, sent on same-origin
requests), writes every value as text (never as markup), and draws the equity curve as an inline SVG path. Kept in a
module rather than a data file, so a wheel always carries it.
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Portfolio</title>
<style>
  :root { color-scheme: light dark; --fg: #1a202c; --muted: #64748b; --bg: #ffffff; --panel: #f8fafc;
          --line: #e2e8f0; --accent: #017cee; --good: #15803d; --bad: #b91c1c; --warn: #b45309; }
  @media (prefers-color-scheme: dark) {
    :root { --fg: #e2e8f0; --muted: #94a3b8; --bg: #0f172a; --panel: #1e293b; --line: #334155; --accent: #4ea5ff;
            --good: #4ade80; --bad: #f87171; --warn: #fbbf24; }
  }
  * { box-sizing: border-box; }
  body { margin: 0; padding: 16px 20px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: 12px; margin-bottom: 12px; }
  h1 { font-size: 20px; margin: 0 12px 0 0; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  select, button { font: inherit; color: inherit; background: var(--panel); border: 1px solid var(--line);
                   border-radius: 6px; padding: 4px 10px; }
  button { cursor: pointer; }
  #status { color: var(--muted); }
  #status.error { color: var(--bad); font-weight: 600; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin-bottom: 14px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
  .card .label { color: var(--muted); font-size: 12px; }
  .card .value { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
  section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px;
            margin-bottom: 14px; overflow-x: auto; }
  .grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px; }
  .grid2 section { margin-bottom: 0; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  td.num, th.num { text-align: right; }
  td.wrap { white-space: normal; min-width: 180px; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; }
  .msg { color: var(--muted); margin: 4px 0 8px; }
  .badge { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600;
           border: 1px solid currentColor; }
  .approved, .GREEN, .pos { color: var(--good); }
  .rejected, .RED, .neg { color: var(--bad); }
  .unchecked, .YELLOW { color: var(--warn); }
  .no-order { color: var(--muted); }
  #equity-chart { width: 100%; height: 260px; display: block; }
  #equity-chart .axis { stroke: var(--line); stroke-width: 1; }
  #equity-chart text { fill: var(--muted); font-size: 11px; }
  #equity-line { fill: none; stroke: var(--accent); stroke-width: 2; }
</style>
</head>
<body>
<header>
  <h1>Portfolio</h1>
  <label>Account <select id="account" aria-label="Account"></select></label>
  <button id="refresh" type="button">Refresh</button>
  <span id="status">Loading&hellip;</span>
</header>
<p id="book-message" class="msg"></p>
<div class="cards" id="cards"></div>
<section id="equity">
  <h2>Equity curve</h2>
  <p class="msg" id="equity-message"></p>
  <svg id="equity-chart" viewBox="0 0 800 260" role="img" aria-label="Equity curve"></svg>
</section>
<section id="positions"><h2>Positions</h2><p class="msg"></p><div class="body"></div></section>
<div class="grid2">
  <section id="orders"><h2>Recent orders</h2><p class="msg"></p><div class="body"></div></section>
  <section id="decisions"><h2>Recent decisions and risk verdicts</h2><p class="msg"></p><div class="body"></div></section>
</div>
<div class="grid2" style="margin-top: 14px">
  <section id="forecast-health"><h2>Forecast health</h2><p class="msg"></p><div class="body"></div></section>
  <section id="freshness"><h2>Data freshness</h2><p class="msg"></p><div class="body"></div></section>
</div>
<script>
(function () {
  "use strict";
  var base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  var state = { account: null };
  var money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var qty = new Intl.NumberFormat(undefined, { maximumFractionDigits: 6 });
  var pct = new Intl.NumberFormat(undefined, { style: "percent", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  var SVG = "http://www.w3.org/2000/svg";

  function get(path, params) {
    var url = new URL(base + path, location.origin);
    Object.keys(params || {}).forEach(function (k) {
      var v = params[k];
      if (v !== null && v !== undefined && v !== "") { url.searchParams.set(k, v); }
    });
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (body) {
        if (resp.ok) { return body; }
        var detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                         : resp.statusText;
        if (resp.status === 401 || resp.status === 403) { detail = "Signed out: sign in to Airflow again (" + detail + ")"; }
        throw new Error(detail);
      });
    });
  }
  function text(value) { return value === null || value === undefined ? "" : String(value); }
  function fmt(f) { return function (v) { return v === null || v === undefined ? "" : f.format(v); }; }
  function when(v) { return v ? v.replace("T", " ").replace(/(\\.\\d+)?(\\+00:00|Z)$/, "") : ""; }
  function node(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (content !== undefined) { e.textContent = text(content); }
    return e;
  }
  function badge(value) { return value ? node("span", "badge " + String(value).replace(/ /g, "-"), value) : node("span"); }
  function table(section, columns, rows, message) {
    var box = document.querySelector("#" + section + " .body");
    document.querySelector("#" + section + " .msg").textContent = text(message);
    box.replaceChildren();
    if (!rows || !rows.length) { return; }
    var t = node("table"), head = node("tr");
    columns.forEach(function (c) { head.appendChild(node("th", c.num ? "num" : "", c.title)); });
    t.appendChild(node("thead")).appendChild(head);
    var body = t.appendChild(node("tbody"));
    rows.forEach(function (row) {
      var tr = body.appendChild(node("tr"));
      tr.dataset.key = text(row.symbol || row.client_order_id || "");
      columns.forEach(function (c) {
        var td = tr.appendChild(node("td", c.num ? "num" : (c.wrap ? "wrap" : "")));
        var value = c.get(row);
        if (value instanceof Node) { td.appendChild(value); } else { td.textContent = text(value); }
        if (c.sign && typeof c.raw === "function") {
          var raw = c.raw(row);
          if (raw > 0) { td.classList.add("pos"); } else if (raw < 0) { td.classList.add("neg"); }
        }
      });
    });
    box.appendChild(t);
  }
  function card(label, value, cls) {
    var c = node("div", "card");
    c.appendChild(node("div", "label", label));
    c.appendChild(node("div", "value " + (cls || ""), value));
    return c;
  }

  function renderBook(book) {
    var select = document.getElementById("account");
    select.replaceChildren();
    (book.accounts || []).forEach(function (a) {
      var o = node("option", "", a);
      o.value = a;
      o.selected = a === book.account;
      select.appendChild(o);
    });
    document.getElementById("book-message").textContent = text(book.message);
    var cards = document.getElementById("cards");
    cards.replaceChildren();
    if (book.account) {
      cards.appendChild(card("Equity", fmt(money)(book.equity)));
      cards.appendChild(card("Cash", fmt(money)(book.cash)));
      cards.appendChild(card("Positions value", fmt(money)(book.positions_value)));
      cards.appendChild(card("Return since start", fmt(pct)(book.total_return),
                             book.total_return > 0 ? "pos" : (book.total_return < 0 ? "neg" : "")));
      var health = book.health || {};
      cards.appendChild(card("Monitoring", health.monitoring ? health.monitoring.level : "no report",
                             health.monitoring ? health.monitoring.level : ""));
      cards.appendChild(card("Risk audit", health.risk_audit ? health.risk_audit.level : "no report",
                             health.risk_audit ? health.risk_audit.level : ""));
      cards.appendChild(card("As of", when(book.as_of)));
    }
    var more = book.positions_total > (book.positions || []).length
      ? "Largest " + book.positions.length + " of " + book.positions_total + " open positions." : "";
    table("positions", [
      { title: "Symbol", get: function (r) { return r.symbol; } },
      { title: "Qty", num: true, get: function (r) { return fmt(qty)(r.qty); } },
      { title: "Avg price", num: true, get: function (r) { return fmt(money)(r.avg_price); } },
      { title: "Mark", num: true, get: function (r) { return fmt(money)(r.mark_price); } },
      { title: "Market value", num: true, get: function (r) { return fmt(money)(r.market_value); } },
      { title: "Unrealized P&L", num: true, sign: true, raw: function (r) { return r.unrealized_pnl; },
        get: function (r) { return fmt(money)(r.unrealized_pnl); } },
      { title: "Weight", num: true, get: function (r) { return fmt(pct)(r.weight); } },
      { title: "Marked at", get: function (r) { return when(r.mark_ts); } }
    ], book.positions, more || (book.account && !(book.positions || []).length && !book.message ? "No open positions." : ""));
  }

  function drawEquity(eq) {
    var svg = document.getElementById("equity-chart");
    svg.replaceChildren();
    var pts = (eq.points || []).filter(function (p) { return p.equity !== null; });
    var msg = text(eq.message);
    if (!msg && eq.drawdown) {
      msg = "Change " + fmt(pct)(eq.change) + "; drawdown now " + fmt(pct)(eq.drawdown.current) + ", max " +
            fmt(pct)(eq.drawdown.maximum) + " (" + when(eq.since) + " to " + when(eq.until) + ", " +
            eq.points_total + " snapshots)";
    }
    document.getElementById("equity-message").textContent = msg;
    svg.dataset.points = String(pts.length);
    if (pts.length < 2) { return; }
    var W = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 800), H = 260, L = 78, R = 12, T = 12, B = 26;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);  // one unit a pixel: text keeps its shape
    var xs = pts.map(function (p) { return Date.parse(p.ts); });
    var ys = pts.map(function (p) { return p.equity; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    var sx = function (x) { return L + (x1 === x0 ? 0 : (x - x0) / (x1 - x0)) * (W - L - R); };
    var sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    function add(tag, attrs, content) {
      var e = document.createElementNS(SVG, tag);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (content !== undefined) { e.textContent = content; }
      svg.appendChild(e);
      return e;
    }
    [y0, (y0 + y1) / 2, y1].forEach(function (y) {
      add("line", { "class": "axis", x1: L, x2: W - R, y1: sy(y), y2: sy(y) });
      add("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, money.format(y));
    });
    add("text", { x: L, y: H - 6, "text-anchor": "start" }, when(pts[0].ts).slice(0, 16));
    add("text", { x: W - R, y: H - 6, "text-anchor": "end" }, when(pts[pts.length - 1].ts).slice(0, 16));
    var d = pts.map(function (p, i) { return (i ? "L" : "M") + sx(xs[i]).toFixed(1) + " " + sy(ys[i]).toFixed(1); });
    add("path", { id: "equity-line", d: d.join(" ") });
  }

  function renderOrders(data) {
    table("orders", [
      { title: "Created", get: function (r) { return when(r.created_at); } },
      { title: "Symbol", get: function (r) { return r.symbol; } },
      { title: "Side", get: function (r) { return r.side; } },
      { title: "Qty", num: true, get: function (r) { return fmt(qty)(r.qty); } },
      { title: "Ref price", num: true, get: function (r) { return fmt(money)(r.ref_price); } },
      { title: "Status", get: function (r) { return r.status; } },
      { title: "Filled", num: true, get: function (r) { return fmt(qty)(r.filled_qty); } },
      { title: "Fill price", num: true, get: function (r) { return fmt(money)(r.filled_avg_price); } },
      { title: "DAG", get: function (r) { return r.dag_id; } },
      { title: "Reason", wrap: true, get: function (r) { return r.reason; } }
    ], data.orders, data.message);
  }

  function renderDecisions(data) {
    var counts = Object.keys(data.verdicts || {}).map(function (k) { return k + " " + data.verdicts[k]; }).join(", ");
    table("decisions", [
      { title: "Bar", get: function (r) { return when(r.bar_ts); } },
      { title: "Symbol", get: function (r) { return r.symbol; } },
      { title: "Action", get: function (r) { return r.action; } },
      { title: "Order qty", num: true, get: function (r) { return fmt(qty)(r.order_qty); } },
      { title: "Score", num: true, get: function (r) { return fmt(num)(r.score); } },
      { title: "Confidence", num: true, get: function (r) { return fmt(num)(r.confidence); } },
      { title: "Verdict", get: function (r) { return badge(r.verdict); } },
      { title: "Risk rule", get: function (r) { return r.risk_rule; } },
      { title: "Why", wrap: true, get: function (r) { return r.risk_reason || r.error || r.reason; } },
      { title: "DAG", get: function (r) { return r.dag_id; } }
    ], data.decisions, data.message || (counts ? "Verdicts of these decisions: " + counts + "." : ""));
  }

  function monitoringLine(m) {
    return m ? "Monitoring " + m.level + " at " + when(m.ts) + ": " + m.summary : "No monitoring report yet.";
  }

  function renderForecastHealth(data) {
    var section = document.getElementById("forecast-health");
    var models = data.models || [];
    var lines = [monitoringLine(data.monitoring)];
    models.forEach(function (m) {
      lines.push(m.model + ": healthy " + m.healthy + ", unhealthy " + m.unhealthy + ", insufficient data " +
                 m.insufficient_data + (m.median_skill === null ? "" : ", median skill " + num.format(m.median_skill)));
    });
    if (data.message) { lines.unshift(data.message); }
    table("forecast-health", [
      { title: "Symbol", get: function (r) { return r.symbol; } },
      { title: "Healthy share", num: true, get: function (r) { return fmt(pct)(r.share_healthy); } },
      { title: "Level", get: function (r) { return badge(r.level); } },
      { title: "Healthy", wrap: true, get: function (r) { return r.healthy.join(", "); } },
      { title: "Unhealthy", wrap: true, get: function (r) { return r.unhealthy.join(", "); } },
      { title: "Insufficient data", wrap: true, get: function (r) { return r.insufficient_data.join(", "); } }
    ], data.symbols, "");
    var msg = section.querySelector(".msg");
    msg.replaceChildren();
    lines.forEach(function (l) { msg.appendChild(node("div", "", l)); });
  }

  function renderFreshness(data) {
    var shown = (data.symbols || []).length;
    var head = data.message || (monitoringLine(data.monitoring) + (data.symbols_total > shown
      ? " Stalest " + shown + " of " + data.symbols_total + " symbols." : ""));
    table("freshness", [
      { title: "Symbol", get: function (r) { return r.symbol; } },
      { title: "Last " + data.timeframe + " bar", get: function (r) { return when(r.last_bar); } },
      { title: "Age (hours)", num: true, get: function (r) { return fmt(num)(r.age_hours); } },
      { title: "Level", get: function (r) { return badge(r.level); } },
      { title: "Monitoring", wrap: true, get: function (r) { return r.monitoring_message; } }
    ], data.symbols, head);
  }

  function setStatus(message, error) {
    var s = document.getElementById("status");
    s.textContent = message;
    s.className = error ? "error" : "";
  }

  function load() {
    setStatus("Loading\\u2026");
    return get("api/book", { account: state.account }).then(function (book) {
      state.account = book.account;
      renderBook(book);
      var p = { account: book.account };
      return Promise.all([
        get("api/equity", p).then(drawEquity),
        get("api/orders", p).then(renderOrders),
        get("api/decisions", p).then(renderDecisions),
        get("api/forecast-health").then(renderForecastHealth),
        get("api/freshness").then(renderFreshness)
      ]);
    }).then(function () {
      document.body.dataset.loaded = "true";
      setStatus("Updated " + new Date().toLocaleTimeString());
    }).catch(function (err) {
      document.body.dataset.loaded = "error";
      setStatus(err.message, true);
    });
  }

  document.getElementById("account").addEventListener("change", function (ev) {
    state.account = ev.target.value || null;
    load();
  });
  document.getElementById("refresh").addEventListener("click", load);
  setInterval(function () { if (!document.hidden) { load(); } }, 60000);
  load();
})();
</script>
</body>
</html>
"""

#: What a signed-out browser gets instead of the page (with HTTP 401 or 403): no data, a way to sign in.
SIGNED_OUT_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Portfolio: sign in</title></head>
<body style="font: 15px system-ui, sans-serif; margin: 40px;">
<h1 style="font-size: 20px;">Portfolio</h1>
<p>Sign in to Airflow to see the portfolio: <a href="../" target="_top">open Airflow</a>.</p>
</body>
</html>
"""
