# Two commands on a fresh clone: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV ?= .venv
# Empty: the newest Airflow 3 the declared range allows. CI also runs the lowest supported one.
AIRFLOW_VERSION ?=
AIRFLOW_LOWEST ?= 3.1.8
LOWEST_VENV ?= .venv-lowest
CLUSTER_VENV ?= .venv-cluster
DEMO_HOME ?= $(CURDIR)/.demo/airflow

# pytest workers (pytest-xdist) of `make test`, `test-airflow` and `test-month`; a test file stays on one worker
# (--dist loadfile), so its module fixtures (a PostgreSQL server, the desk's day in one Airflow home) are made once.
# 0: no workers. `test-lowest` runs in one process: its long standalone runs gained nothing from two workers here.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

AIRFLOW_SPEC = $(if $(AIRFLOW_VERSION),apache-airflow==$(AIRFLOW_VERSION),apache-airflow>=3.1.8,<4)
UV = $(VENV)/bin/uv

.PHONY: venv demo test test-airflow test-month test-fast test-lowest test-cluster bench system-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(UV) pip install --python $(VENV)/bin/python "$(AIRFLOW_SPEC)" -e ".[test,postgres]"
	touch $@

venv: $(VENV)/.installed

# Debian packages the test suite needs (PostgreSQL server for the store tests).
system-deps:
	bash scripts/install-system-deps.sh

demo: venv
	bash scripts/demo.sh $(VENV) "$(DEMO_HOME)"

# The whole suite but the runs of a real Airflow (marker 'slow', about 20 minutes: `make test-airflow`) and the
# simulated months (marker 'month': `make test-month`); about 6 minutes on 2 cores. CI runs all three.
test: venv system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest $(XDIST) -m "not month and not slow and not cluster"

# A real Airflow: db migrate, `airflow dags test`, `airflow standalone` with the example DAGs, the Connections UI
# in headless chromium.
test-airflow: venv system-deps
	$(VENV)/bin/python -m pytest $(XDIST) -m "slow and not month"

# The simulated month of the agent DAGs (60 runs through dag.test(), the book reconciled) and the six-month
# replay of 30-minute cycles.
test-month: venv system-deps
	$(VENV)/bin/python -m pytest $(XDIST) -m month

# The same as `make test` (kept for habit): no real Airflow, no simulated month.
test-fast: venv system-deps
	$(VENV)/bin/python -m pytest -m "not slow and not month and not cluster"

# The lowest supported Airflow, in its own venv: provider discovery, DAG integrity, connection forms, hooks, operators, the trading cycle, the ETL, forecast and trading DAGs in a real Airflow.
# Of the trading suites, those through the Alpaca hook (an Airflow hook); the others import no Airflow at all and run
# once, in `make test` (the trading cycle through Airflow is in tests/operators and tests/airflow). The desk's
# `dags test` days (environment check, monitoring, master, metrics and lineage) run once, in `make test-airflow`: their
# operators' Airflow-facing parts run here in tests/operators, tests/notifications and the setup and policy tests.
# Two scheduler runs stay on the newest Airflow only (to keep CI within its hour with `test-cluster`): the session
# timetable's runs (its plugin loading and dates run here in tests/timetables) and the master's Asset starting the
# forecast in default_pool (the pool fallback runs here in tests/test_pool_policy.py).
test-lowest: system-deps
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(LOWEST_VENV)/bin/uv pip install --python $(LOWEST_VENV)/bin/python "apache-airflow==$(AIRFLOW_LOWEST)" -e ".[test,postgres]"
	$(LOWEST_VENV)/bin/python -m pytest $(XDIST) -m "not month" tests/airflow tests/etl tests/hooks tests/operators tests/sensors tests/timetables tests/ui \
		tests/notifications tests/test_setup_command.py tests/test_pool_policy.py tests/test_metrics.py tests/test_lineage.py \
		tests/test_dag_factory.py tests/test_cli_restore.py tests/test_cli_jobs.py tests/test_dockerfile.py \
		--ignore=tests/airflow/test_desk_real.py --ignore=tests/airflow/test_env_sanity_real.py \
		--ignore=tests/airflow/test_metrics_lineage_real.py \
		--deselect tests/airflow/test_market_hours_real.py::test_scheduler_creates_the_session_timetables_runs \
		--deselect tests/airflow/test_forecast_real.py::test_standalone_master_run_starts_the_forecast_by_asset_in_the_default_pool \
		tests/trading/test_alpaca_broker.py tests/trading/test_fault_matrix.py

# The desk on a cluster (tests/cluster/cluster.py): PostgreSQL, Redis and Airflow on CeleryExecutor with two Celery
# workers, one of them on the GPU queue, all on 127.0.0.1; worker, broker, database, scheduler and triggerer faults.
# Its own venv: Airflow with the celery and postgres extras, which `make test` runs without.
test-cluster: system-deps
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(CLUSTER_VENV)/bin/uv pip install --python $(CLUSTER_VENV)/bin/python \
		"apache-airflow[celery,postgres]$(if $(AIRFLOW_VERSION),==$(AIRFLOW_VERSION),>=3.1.8,<4)" -e ".[test,postgres,celery]"
	$(CLUSTER_VENV)/bin/python -m pytest -m cluster -s --durations=12 tests/cluster

bench: venv system-deps
	$(UV) pip install --python $(VENV)/bin/python -q -e ".[bench]"
	$(VENV)/bin/python bench/bench_store.py
	$(VENV)/bin/python bench/bench_import.py
	$(VENV)/bin/python bench/bench_synthetic.py
	$(VENV)/bin/python bench/bench_quality.py
	$(VENV)/bin/python bench/bench_market_hours.py
	$(VENV)/bin/python bench/bench_trading.py
	$(VENV)/bin/python bench/bench_backtest.py
	$(VENV)/bin/python bench/bench_discovery.py
	$(VENV)/bin/python bench/forecast.py

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(CLUSTER_VENV) .demo .pytest_cache
