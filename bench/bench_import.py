"""Import cost of the example DAGs against a bare ``import airflow.sdk``, side by side in fresh processes.

Each sample is a new interpreter: one imports ``airflow.sdk`` only, the other imports ``airflow.sdk``
and then every example DAG file. The cost of the DAGs is the difference of medians. The DAG run
also checks its answer: every example DAG defined, no heavy module loaded. Target: < 100 ms.

Usage: python bench/bench_import.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from checks import REPO, check, exit_status

HEAVY = ["pandas", "numpy", "scipy", "statsmodels", "arch", "alpaca", "finnhub", "alpha_vantage",
         "pandas_market_calendars", "cupy"]
TARGET_MS = 100.0

BASE = """
import time, json
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
print(json.dumps({"sdk": t1 - t0}))
"""

DAGS = """
import time, json, sys, pathlib, importlib.util
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
dag_ids = []
for path in sorted(pathlib.Path(%r).glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from airflow.sdk import DAG
    dag_ids += [v.dag_id for v in vars(module).values() if isinstance(v, DAG)]
t2 = time.perf_counter()
heavy = [m for m in %r if m in sys.modules]
print(json.dumps({"sdk": t1 - t0, "total": t2 - t0, "dags": sorted(dag_ids), "heavy": heavy}))
"""


def sample(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-import-")
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    dag_code = DAGS % (str(REPO / "example_dags"), HEAVY)
    sample(BASE, env)  # warm the OS file cache for both
    sample(dag_code, env)
    bare, with_dags, in_process, last = [], [], [], {}
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        bare.append(sample(BASE, env)["sdk"])
        last = sample(dag_code, env)
        with_dags.append(last["total"])
        in_process.append(last["total"] - last["sdk"])
    bare_ms = statistics.median(bare) * 1000
    dags_ms = statistics.median(with_dags) * 1000
    cost = statistics.median(in_process) * 1000
    print(f"bare `import airflow.sdk`             median {bare_ms:8.1f} ms over {args.runs} fresh processes")
    print(f"`import airflow.sdk` + example DAGs    median {dags_ms:8.1f} ms (difference of medians "
          f"{dags_ms - bare_ms:+.1f} ms: dominated by process-to-process noise)")
    print(f"example DAGs after `import airflow.sdk` median {cost:8.1f} ms, measured in the same process "
          f"(ratio {cost / bare_ms:.3f} of a bare sdk import)")
    expected = {"portfolio_daily_etl"}
    check(expected <= set(last["dags"]), f"DAGs defined: {', '.join(last['dags'])} (at least {sorted(expected)})")
    check(not last["heavy"], f"no heavy module loaded at import (loaded: {last['heavy'] or 'none'})")
    check(cost < TARGET_MS, f"target: DAG import cost {cost:.1f} ms < {TARGET_MS:.0f} ms")
    return exit_status()

if __name__ == "__main__":
    sys.exit(main())
