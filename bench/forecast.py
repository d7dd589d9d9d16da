"""Batched forecasting against per-symbol statsmodels and arch loops, with the answers checked.

In one process, on panels with a known truth (``forecast/simulate.py``):

1. **SSA family vs SARIMAX.** ``--symbols`` (500) x ``--bars`` (1000) daily log-price-like series
   (trend + seasonal + AR(1) noise), horizon 5. SSA, SAMoSSA and mSSA on the whole panel against a
   loop of statsmodels ``SARIMAX(1, 0, 1)`` with a constant, one symbol at a time, over the first
   ``--sarimax-symbols`` (100) symbols (its cost per symbol is flat; the whole 500 would take
   minutes). Target: each of the SSA family >= 30x faster per symbol. Gate: SSA and SAMoSSA have
   lower median RMSE than SARIMAX, the last value and the drift on the held-out 5 bars.
2. **GARCH vs arch.** 500 x 1000 GARCH(1,1) returns (alpha 0.05-0.12, beta 0.80-0.86): batched
   ``garch_fit`` against a loop of ``arch_model(..., mean="Zero", vol="GARCH").fit()`` on the same
   demeaned data. Target >= 10x per symbol. Gates: median |alpha - arch| and |beta - arch| <= 0.02,
   median |alpha - truth| and |beta - truth| <= 0.05. Student-t innovations likewise on
   ``--t-symbols`` (500) symbols (ratio reported, same answer gates).
3. **CPU layout.** SSA over the panel with 1 process x 1 BLAS thread, 1 x 2, and 2 processes x 1
   thread (half the panel each); the best is printed.
4. **Memory peak** (tracemalloc: NumPy reports its buffers to it) of each batched model.
5. **GPU.** Where CuPy sees a GPU: each batched model on CuPy against NumPy at 500, 5,000 and 20,000
   symbols, cold (first call in the process) and warm, and the parity of the answers (1e-8
   relative). Target >= 20x at 5,000 symbols warm. Without a GPU this section says so and checks
   nothing.
6. **statsforecast.** Nixtla's ``AutoARIMA`` and ``GARCH(1, 1)``, one series at a time, on the same
   panels as sections 1 and 2 (the first ``--sarimax-symbols`` symbols): time per symbol and the ratio
   to the provider's models, RMSE side by side (levels: point forecasts over the 5 held-out bars; GARCH:
   variance forecasts against the squared demeaned held-out returns, GARCH fitted on all but the last 5
   returns). Checks: finite forecasts of shape (symbols, 5), positive variances. No speed target: the
   ratios are reported. statsforecast is an optional dependency (the ``bench`` extra:
   ``pip install "airflow-provider-portfolio[bench]"``). ``--statsforecast auto`` (default) runs this
   section when it is installed and otherwise says plainly that it was skipped (the other sections still
   decide the exit status); ``--statsforecast require`` makes a missing statsforecast an error (exit
   status 2, before anything runs); ``--statsforecast skip`` leaves the section out.

Both sides of every ratio run pinned to one BLAS thread unless the layout section says otherwise.
Exit status 1 when a check fails.

Usage: python bench/forecast.py [--symbols 500] [--bars 1000] [--sarimax-symbols 100] [--t-symbols 500]
       [--statsforecast auto|require|skip]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from checks import check, exit_status, timed

HORIZON = 5


def _ssa_half(rows):
    from threadpoolctl import threadpool_limits

    from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

    with threadpool_limits(1):
        return ssa_fit_forecast(rows, HORIZON).point


def ssa_family(args, np):
    from threadpoolctl import threadpool_limits

    from airflow_provider_portfolio.forecast.baselines import drift, last_value
    from airflow_provider_portfolio.forecast.mssa import mssa_fit_forecast
    from airflow_provider_portfolio.forecast.samossa import samossa_fit_forecast
    from airflow_provider_portfolio.forecast.simulate import seasonal_ar_panel
    from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

    print(f"\n1. SSA family vs statsmodels SARIMAX(1,0,1): {args.symbols} symbols x {args.bars} bars, horizon {HORIZON}")
    full = seasonal_ar_panel(args.symbols, args.bars + HORIZON, seed=7)
    train, future = full[:, :-HORIZON], full[:, -HORIZON:]
    models = {"ssa": ssa_fit_forecast, "samossa": samossa_fit_forecast, "mssa": mssa_fit_forecast}
    seconds, points = {}, {}
    with threadpool_limits(1):
        for name, fn in models.items():
            fn(train[:20], HORIZON)  # warm the code paths
            seconds[name], fc = timed(lambda fn=fn: fn(train, HORIZON), repeat=3)
            points[name] = fc.point
            print(f"   {name:8s} {seconds[name]:7.3f} s for the panel = {seconds[name] / args.symbols * 1e3:7.3f} ms/symbol")

        import statsmodels.api  # noqa: F401  (import cost kept out of the timing)
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        n = min(args.sarimax_symbols, args.symbols)

        def sarimax_loop():
            out = np.empty((n, HORIZON))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(n):
                    res = SARIMAX(train[i], order=(1, 0, 1), trend="c").fit(disp=False)
                    out[i] = res.forecast(HORIZON)
            return out

        sarimax_s, sarimax_point = timed(sarimax_loop)
    per_sarimax = sarimax_s / n
    print(f"   sarimax  {sarimax_s:7.3f} s for {n} symbols = {per_sarimax * 1e3:7.3f} ms/symbol (loop)")
    for name in models:
        ratio = per_sarimax / (seconds[name] / args.symbols)
        check(ratio >= 30, f"{name} is {ratio:.0f}x faster per symbol than the SARIMAX loop (target >= 30x)")

    def rmse(point):
        return float(np.median(np.sqrt(np.mean((point[:n] - future[:n]) ** 2, axis=1))))

    errors = {name: rmse(p) for name, p in points.items()}
    errors["sarimax"] = rmse(sarimax_point)
    errors["last_value"] = rmse(last_value(train, HORIZON).point)
    errors["drift"] = rmse(drift(train, HORIZON).point)
    print("   median RMSE over the 5 held-out bars (first %d symbols): %s" % (
        n, ", ".join(f"{k} {v:.3f}" for k, v in errors.items())))
    for name in ("ssa", "samossa"):
        others = ("sarimax", "last_value", "drift")
        check(all(errors[name] < errors[o] for o in others), f"{name} beats {', '.join(others)} on RMSE")
    ours = {name: {"seconds_per_symbol": seconds[name] / args.symbols, "point": points[name]} for name in models}
    ours["sarimax"] = {"seconds_per_symbol": per_sarimax, "point": sarimax_point}
    return train, future, ours


def garch_section(args, np):
    import arch  # noqa: F401  (import cost kept out of the timing)
    from arch import arch_model
    from threadpoolctl import threadpool_limits

    from airflow_provider_portfolio.forecast.garch import garch_fit
    from airflow_provider_portfolio.forecast.simulate import garch_panel

    print(f"\n2. Batched GARCH(1,1) vs an arch loop: {args.symbols} symbols x {args.bars} returns")
    for dist, symbols, nu in (("normal", args.symbols, None), ("t", min(args.t_symbols, args.symbols), 7.0)):
        rng = np.random.default_rng(11)
        alpha = rng.uniform(0.05, 0.12, symbols)
        beta = rng.uniform(0.80, 0.86, symbols)
        omega = 2e-6 * np.ones(symbols)
        returns = garch_panel(symbols, args.bars, omega=omega, alpha=alpha, beta=beta, nu=nu, mu=3e-4, seed=5)
        with threadpool_limits(1):
            garch_fit(returns[:10], dist=dist)  # warm
            ours_s, fit = timed(lambda: garch_fit(returns, dist=dist))
            demeaned = returns - returns.mean(axis=1, keepdims=True)
            scaled = demeaned / demeaned.std(axis=1, keepdims=True)  # arch's optimiser wants unit scale

            def arch_loop():
                out = np.empty((symbols, 2))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for i in range(symbols):
                        res = arch_model(scaled[i], mean="Zero", vol="GARCH", p=1, q=1, dist=dist,
                                         rescale=False).fit(disp="off")
                        out[i] = res.params["alpha[1]"], res.params["beta[1]"]
                return out

            arch_s, ref = timed(arch_loop)
        ratio = (arch_s / symbols) / (ours_s / symbols)
        print(f"   {dist:6s} batched {ours_s:7.3f} s ({ours_s / symbols * 1e3:.2f} ms/symbol), arch loop {arch_s:7.3f} s "
              f"({arch_s / symbols * 1e3:.2f} ms/symbol): {ratio:.1f}x; converged {int(np.sum(fit.converged))}/{symbols}")
        a, b = np.asarray(fit.alpha), np.asarray(fit.beta)
        d_arch = (float(np.median(np.abs(a - ref[:, 0]))), float(np.median(np.abs(b - ref[:, 1]))))
        d_true = (float(np.median(np.abs(a - alpha))), float(np.median(np.abs(b - beta))))
        if dist == "normal":
            check(ratio >= 10, f"batched GARCH is {ratio:.1f}x faster per symbol than the arch loop (target >= 10x)")
        else:
            print(f"   (t: {ratio:.1f}x, reported)")
        check(max(d_arch) <= 0.02, f"{dist}: median |alpha - arch| {d_arch[0]:.4f}, |beta - arch| {d_arch[1]:.4f} <= 0.02")
        check(max(d_true) <= 0.05, f"{dist}: median |alpha - truth| {d_true[0]:.4f}, |beta - truth| {d_true[1]:.4f} <= 0.05")
    return returns


def layout_section(train, np):
    from threadpoolctl import threadpool_limits

    from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

    print("\n3. CPU layout for SSA over the panel (processes x BLAS threads)")
    results = {}
    for threads in (1, 2):
        with threadpool_limits(threads):
            ssa_fit_forecast(train[:20], HORIZON)
            results[f"1 x {threads}"], one = timed(lambda: ssa_fit_forecast(train, HORIZON).point, repeat=2)
    halves = np.array_split(train, 2)
    with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as pool:
        list(pool.map(_ssa_half, [h[:20] for h in halves]))  # start and warm the workers
        results["2 x 1"], parts = timed(lambda: list(pool.map(_ssa_half, halves)), repeat=2)
    check(np.allclose(np.concatenate(parts), one, rtol=1e-10, atol=1e-10), "2 processes give the same forecasts")
    for layout, s in results.items():
        print(f"   {layout}: {s:.3f} s")
    best = min(results, key=results.get)
    print(f"   best layout on this machine: {best} (processes x BLAS threads)")


def memory_section(train, returns, np):
    from airflow_provider_portfolio.forecast.garch import garch_fit
    from airflow_provider_portfolio.forecast.mssa import mssa_fit_forecast
    from airflow_provider_portfolio.forecast.samossa import samossa_fit_forecast
    from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

    print(f"\n4. Memory peak over the input panel ({train.nbytes / 2**20:.1f} MiB)")
    for name, fn in (("ssa", lambda: ssa_fit_forecast(train, HORIZON)),
                     ("samossa", lambda: samossa_fit_forecast(train, HORIZON)),
                     ("mssa", lambda: mssa_fit_forecast(train, HORIZON)),
                     ("garch", lambda: garch_fit(returns))):
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"   {name:8s} peak {peak / 2**20:8.1f} MiB")


def gpu_section(np):
    from airflow_provider_portfolio.forecast.backend import get_backend, to_numpy
    from airflow_provider_portfolio.forecast.garch import garch_fit
    from airflow_provider_portfolio.forecast.samossa import samossa_fit_forecast
    from airflow_provider_portfolio.forecast.simulate import garch_panel, seasonal_ar_panel
    from airflow_provider_portfolio.forecast.ssa import ssa_fit_forecast

    print("\n5. CuPy against NumPy")
    backend = get_backend("auto")
    if not backend.is_gpu:
        print("   no GPU visible here: CuPy comparisons not run (nothing checked)")
        return
    cp = backend.xp
    print(f"   device {backend.device}")
    models = {
        "ssa": lambda xp, p, r: ssa_fit_forecast(p, HORIZON, xp=xp).point,
        "samossa": lambda xp, p, r: samossa_fit_forecast(p, HORIZON, xp=xp).point,
        "garch": lambda xp, p, r: garch_fit(r, xp=xp).alpha,
    }
    for n in (500, 5000, 20000):
        levels = seasonal_ar_panel(n, 1000, seed=n)
        returns = garch_panel(n, 1000, omega=2e-6, alpha=0.08, beta=0.88, seed=n)
        for name, fn in models.items():
            t0 = time.perf_counter()
            gpu = to_numpy(fn(cp, cp.asarray(levels), cp.asarray(returns)))
            cp.cuda.Device().synchronize()
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn(cp, cp.asarray(levels), cp.asarray(returns))
            cp.cuda.Device().synchronize()
            warm = time.perf_counter() - t0
            cpu_s, cpu = timed(lambda fn=fn: fn(np, levels, returns))
            rel = float(np.max(np.abs(gpu - cpu) / np.maximum(np.abs(cpu), 1e-300)))
            print(f"   {name:8s} n={n:6d} numpy {cpu_s:8.3f} s, cupy cold {cold:8.3f} s warm {warm:8.3f} s: "
                  f"{cpu_s / warm:6.1f}x warm, max rel diff {rel:.1e}")
            check(rel <= 1e-8, f"{name} n={n}: CuPy matches NumPy to 1e-8 relative")
            if n == 5000:
                check(cpu_s / warm >= 20, f"{name} n=5000: CuPy warm {cpu_s / warm:.1f}x NumPy (target >= 20x)")


def _garch_returns(symbols, bars, np):
    """The GARCH panel of section 2 (normal innovations), rebuilt with the same seeds."""
    from airflow_provider_portfolio.forecast.simulate import garch_panel

    rng = np.random.default_rng(11)
    alpha = rng.uniform(0.05, 0.12, symbols)
    beta = rng.uniform(0.80, 0.86, symbols)
    return garch_panel(symbols, bars, omega=2e-6 * np.ones(symbols), alpha=alpha, beta=beta, nu=None, mu=3e-4, seed=5)


def statsforecast_section(args, np, train, future, ours):
    """Section 6: statsforecast's AutoARIMA and GARCH against the provider's models on the same panels."""
    print("\n6. statsforecast (AutoARIMA, GARCH(1,1)) against the provider's models")
    if args.statsforecast == "skip":
        print("   skipped (--statsforecast skip)")
        return
    if importlib.util.find_spec("statsforecast") is None:
        print('   statsforecast is not installed: comparison skipped (pip install "airflow-provider-portfolio[bench]"; '
              "--statsforecast require makes this an error)")
        return
    from statsforecast.models import GARCH, AutoARIMA
    from threadpoolctl import threadpool_limits

    from airflow_provider_portfolio.forecast.garch import garch_fit

    n = min(args.sarimax_symbols, args.symbols)
    print(f"   first {n} symbols of the panels of sections 1 and 2, one series at a time, horizon {HORIZON}")

    def rmse(point):
        return float(np.median(np.sqrt(np.mean((point[:n] - future[:n]) ** 2, axis=1))))

    with threadpool_limits(1):
        AutoARIMA().forecast(y=train[0, :200], h=HORIZON)  # compile (numba) and warm, out of the timing

        def arima_loop():
            out = np.empty((n, HORIZON))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(n):
                    out[i] = AutoARIMA().forecast(y=train[i], h=HORIZON)["mean"]
            return out

        arima_s, arima_point = timed(arima_loop)
    per_arima = arima_s / n
    check(arima_point.shape == (n, HORIZON) and bool(np.all(np.isfinite(arima_point))),
          f"statsforecast AutoARIMA: finite forecasts of shape ({n}, {HORIZON})")
    print(f"   {'model':18s} {'ms/symbol':>10s} {'AutoARIMA / model':>18s} {'median RMSE':>12s}")
    for name, res in ours.items():
        per = res["seconds_per_symbol"]
        print(f"   {name:18s} {per * 1e3:10.3f} {per_arima / per:17.1f}x {rmse(res['point']):12.3f}")
    print(f"   {'sf AutoARIMA':18s} {per_arima * 1e3:10.3f} {1.0:17.1f}x {rmse(arima_point):12.3f}")

    # GARCH: fit on all but the last HORIZON returns, score the variance forecasts on those.
    returns = _garch_returns(args.symbols, args.bars, np)[:n]
    fit_r, held = returns[:, :-HORIZON], returns[:, -HORIZON:]
    with threadpool_limits(1):
        garch_fit(fit_r[:10])  # warm
        ours_s, fit = timed(lambda: garch_fit(fit_r))
        ours_var = np.asarray(fit.variance_forecast(HORIZON))
        mu = fit_r.mean(axis=1, keepdims=True)
        demeaned = fit_r - mu
        scale = demeaned.std(axis=1, keepdims=True)  # unit scale, as for arch in section 2
        scaled = demeaned / scale
        GARCH(1, 1).forecast(y=scaled[0], h=HORIZON)  # compile and warm

        def sf_garch_loop():
            out = np.empty((n, HORIZON))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(n):
                    out[i] = GARCH(1, 1).forecast(y=scaled[i], h=HORIZON)["sigma2"]
            return out * scale ** 2

        sf_s, sf_var = timed(sf_garch_loop)
    check(sf_var.shape == (n, HORIZON) and bool(np.all(np.isfinite(sf_var))) and bool(np.all(sf_var > 0)),
          f"statsforecast GARCH: finite positive variance forecasts of shape ({n}, {HORIZON})")
    realised = (held - mu) ** 2

    def var_rmse(var):
        return float(np.median(np.sqrt(np.mean((var - realised) ** 2, axis=1))))

    sample = np.var(fit_r, axis=1, keepdims=True) * np.ones(HORIZON)
    print(f"   {'model':18s} {'ms/symbol':>10s} {'sf GARCH / model':>18s} {'median var RMSE':>16s}")
    print(f"   {'garch (batched)':18s} {ours_s / n * 1e3:10.3f} {sf_s / ours_s:17.1f}x {var_rmse(ours_var):16.3e}")
    print(f"   {'sf GARCH(1,1)':18s} {sf_s / n * 1e3:10.3f} {1.0:17.1f}x {var_rmse(sf_var):16.3e}")
    print(f"   {'sample variance':18s} {'':10s} {'':18s} {var_rmse(sample):16.3e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--sarimax-symbols", type=int, default=100)
    parser.add_argument("--t-symbols", type=int, default=500)
    parser.add_argument("--statsforecast", choices=("auto", "require", "skip"), default="auto",
                        help="compare with statsforecast: when installed (auto), always (require), never (skip)")
    args = parser.parse_args()
    import numpy as np

    if args.statsforecast == "require" and importlib.util.find_spec("statsforecast") is None:
        print("statsforecast is not installed, and --statsforecast require asks for the comparison: "
              'pip install "airflow-provider-portfolio[bench]" (or --statsforecast auto to skip it)')
        return 2
    train, future, ours = ssa_family(args, np)
    returns = garch_section(args, np)
    layout_section(train, np)
    memory_section(train, returns, np)
    gpu_section(np)
    statsforecast_section(args, np, train, future, ours)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
