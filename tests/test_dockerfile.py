"""The image (``Dockerfile``, ``.dockerignore``) and the container DAGs, without a Docker engine.

The image itself is not built here: the Dockerfile is parsed (base image, non-root user, the CLI as entry point,
a writable AIRFLOW_HOME) and its entry point simulated: the provider's wheel built from exactly what the Dockerfile
copies, installed with its extras into a fresh virtual environment (no dev tools), then ``airflow-portfolio --help``
and an ``etl`` run from it with an empty AIRFLOW_HOME. The container DAGs' arguments render into commands the CLI
accepts; their files define no DAG without the optional providers.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_portfolio import cli, containers
from airflow_provider_portfolio.variables import DEFAULT_TICKERS
from tests.vendorkeys import FINNHUB_KEY

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO / "example_dags"


# -- the Dockerfile, parsed -------------------------------------------------------------------------------------------


def instructions(path: Path = REPO / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The build stages (each from its FROM), after the global ARGs."""
    result: list[list[tuple[str, str]]] = []
    for word, args in instructions():
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, args))
    return result


def global_args() -> dict[str, str]:
    """ARGs before the first FROM, with their defaults."""
    out = {}
    for word, args in instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = args.partition("=")
            out[name] = default
    return out


def stage_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return {a.partition("=")[0]: a.partition("=")[2] for w, a in stage if w == "ARG"}


def test_the_final_stage_is_slim_python_311_running_the_cli_as_a_user():
    final = stages()[-1]
    base = final[0][1].replace("${PYTHON_VERSION}", global_args()["PYTHON_VERSION"])
    assert base == "python:3.11-slim"
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    [entrypoint] = [a for w, a in final if w == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["airflow-portfolio"]  # exec form: signals reach the CLI
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["airflow-portfolio"] == "airflow_provider_portfolio.cli:main"
    assert [a for w, a in final if w == "WORKDIR"]


def test_airflow_home_is_set_and_the_user_owns_it():
    final = stages()[-1]
    env = " ".join(a for w, a in final if w == "ENV")
    home = re.search(r"AIRFLOW_HOME=(\S+)", env).group(1)
    user = [a for w, a in final if w == "USER"][-1]
    runs = [a.replace("$AIRFLOW_HOME", home).replace('"', "") for w, a in final if w == "RUN"]
    assert any(f"chown -R {user}:0" in r and home in r.split(f"chown -R {user}:0", 1)[1] for r in runs), runs
    assert any("/data" in r.split("chown", 1)[-1] for r in runs if "chown" in r)  # the volume's folder too
    # the user is created before USER switches to it
    index = {w: i for i, (w, _) in enumerate(final)}
    assert any("useradd" in a and f"--uid {user}" in a for w, a in final[:index["USER"]] if w == "RUN")


def test_the_package_is_installed_with_its_postgres_extra():
    final = stages()[-1]
    assert "postgres" in stage_args(final)["EXTRAS"].split(",")
    installs = [a for w, a in final if w == "RUN" and "pip install" in a]
    assert len(installs) == 1 and '"${wheel}[${EXTRAS}]"' in installs[0]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "postgres" in extras


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` leaves ``path`` out: the last pattern matching it or one of its folders decides
    (``!`` keeps); ``*`` crosses folders here, which the patterns of this file allow for."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(c, glob) for c in candidates):
            verdict = not keep
    return verdict


def test_the_build_context_holds_the_sources_and_nothing_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = [a.split()[:-1] for w, a in stages()[0] if w == "COPY"]
    sources = [s.rstrip("/") for group in copied for s in group]
    assert sorted(sources) == ["README.md", "airflow_provider_portfolio", "pyproject.toml"]
    for source in sources:
        assert not ignored(source, patterns), source
    assert not ignored("airflow_provider_portfolio/cli.py", patterns)
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/test_cli_jobs.py", "desk.db", ".demo/airflow/x",
                     "airflow_provider_portfolio/__pycache__/cli.cpython-311.pyc", "example_dags/portfolio_docker.py"):
        assert ignored(left_out, patterns), left_out


# -- the image's entry point, simulated -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory) -> Path:
    """The wheel built from what the Dockerfile copies, installed with its extras in a fresh venv, as the image does
    (the packages from the local uv cache: no network)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None, "uv is not installed: make venv installs it beside the venv's python"
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    for group in (a.split()[:-1] for w, a in stages()[0] if w == "COPY"):
        for source in group:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                context.mkdir(exist_ok=True)
                shutil.copy2(src, context / source)
    built = subprocess.run([uv, "build", "--wheel", "--offline", "-o", str(root / "wheels"), str(context)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"the wheel did not build offline (make venv puts the build backend in uv's " \
                                  f"cache): {built.stderr[-2000:]}"
    [wheel] = (root / "wheels").glob("*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    extras = stage_args(stages()[-1])["EXTRAS"]
    installed = subprocess.run([uv, "pip", "install", "--offline", "--python", str(venv / "bin" / "python"),
                                f"{wheel}[{extras}]"], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def in_image(venv: Path, home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the venv with only what the image's environment holds (PATH, AIRFLOW_HOME, HOME)."""
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "AIRFLOW_HOME": str(home), "HOME": str(home)}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_image_entry_point_runs_a_job_from_the_wheel(image_venv, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    done = in_image(image_venv, home, "airflow-portfolio", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("etl", "forecast", "trade", "discover", "rebalance", "report", "setup", "restore-store"):
        assert command in done.stdout
    # The package is the wheel's, and the image has no dev tools.
    done = in_image(image_venv, home, "python", "-c", "import airflow_provider_portfolio as p; print(p.__file__)",
                    cwd=tmp_path)
    assert done.stdout.strip().startswith(str(image_venv))
    done = in_image(image_venv, home, "python", "-c", "import pytest", cwd=tmp_path)
    assert done.returncode == 1 and "No module named 'pytest'" in done.stderr

    # No --store: the embedded store under AIRFLOW_HOME, as in the image (a volume there keeps it).
    done = in_image(image_venv, home, "airflow-portfolio", "etl", "--symbols", "AAPL,BTC/USD", "--history-sessions",
                    "5", "--as-of", "2025-03-04T16:00:00+00:00", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    db = home / "portfolio" / "portfolio.db"
    assert result["store"] == f"sqlite:///{db}" and result["rows_written"] == 5 + 7
    con = sqlite3.connect(db)
    try:
        assert dict(con.execute("SELECT symbol, count(*) FROM bars GROUP BY symbol")) == {"AAPL": 5, "BTC/USD": 7}
    finally:
        con.close()
    assert not (home / "airflow.db").exists()  # no Airflow metadata database was made


# -- the container DAGs -----------------------------------------------------------------------------------------------


def render(argument: str, **context: object) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["ts"] = lambda value: value.isoformat()
    return env.from_string(argument).render(**context)


@pytest.mark.parametrize("store", [containers.VOLUME_STORE, None])
@pytest.mark.parametrize("job", containers.JOBS)
def test_each_container_job_renders_into_a_command_the_cli_takes(job, store):
    import pendulum

    context = {
        "params": {"store": store, "broker_conn_id": None, "report_out": containers.VOLUME_REPORTS},
        "run_id": "manual__2025-03-04T16:00:00+00:00", "dag": SimpleNamespace(dag_id="portfolio_docker"),
        "dag_run": SimpleNamespace(run_after=pendulum.datetime(2025, 3, 4, 16)),
        "var": SimpleNamespace(value=SimpleNamespace(get=lambda key, default=None: default)),
    }
    argv = [render(a, **context) for a in containers.job_arguments(job)]
    args = cli.build_parser().parse_args(argv)
    assert args.command == job and args.json is True
    assert args.store == (store or "")  # "" is the store connection the container gets, else the embedded store
    if job in ("etl", "forecast", "trade"):
        assert args.symbols.split(",") == DEFAULT_TICKERS  # Variable portfolio.default_tickers' default
    if job == "etl":
        assert args.as_of == "2025-03-04T16:00:00+00:00"
    if job in ("forecast", "trade", "discover"):
        assert args.run_id == "manual__2025-03-04T16:00:00+00:00"  # a retried container replaces, never doubles
    if job in ("trade", "discover"):
        assert args.dag_id == "portfolio_docker"
    if job == "trade":
        assert args.broker_conn_id == "" and args.allow_live is False
    if job == "report":
        assert args.out == "/data/reports"


def test_connections_reach_a_container_as_airflow_reads_them(add_connection, monkeypatch):
    from airflow.sdk import BaseHook

    env = containers.connection_env()
    assert set(env) == {"AIRFLOW_CONN_ALPACA_DEFAULT", "AIRFLOW_CONN_ALPHAVANTAGE_DEFAULT",
                        "AIRFLOW_CONN_FINNHUB_DEFAULT", "AIRFLOW_CONN_PORTFOLIO_STORE_DEFAULT"}
    add_connection("finnhub_default", "finnhub", password=FINNHUB_KEY, host="finnhub.example", timeout=5)
    rendered = {k: render(v, **{containers.CONNECTION_MACRO: containers.connection_json}) for k, v in env.items()}
    assert rendered["AIRFLOW_CONN_ALPACA_DEFAULT"] == ""  # absent in Airflow: empty, which Airflow reads as absent
    # In the container: the same connection, read from the variable the task rendered.
    for key in env:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_FINNHUB_DEFAULT", rendered["AIRFLOW_CONN_FINNHUB_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_ALPACA_DEFAULT", rendered["AIRFLOW_CONN_ALPACA_DEFAULT"])
    conn = BaseHook.get_connection("finnhub_default")
    assert (conn.conn_type, conn.password, conn.host, conn.extra_dejson) == (
        "finnhub", FINNHUB_KEY, "finnhub.example", {"timeout": 5})
    from airflow_provider_portfolio.hooks.market_data import connection_exists

    assert connection_exists("finnhub_default") and not connection_exists("alpaca_default")


@pytest.mark.parametrize("name, provider", [("portfolio_docker", "airflow.providers.docker"),
                                            ("portfolio_kubernetes", "airflow.providers.cncf.kubernetes")])
def test_a_container_dag_needs_its_provider_and_says_nothing_without_it(name, provider, caplog):
    caplog.set_level(logging.DEBUG)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLE_DAGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(module)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    dag = getattr(module, f"{name}_dag", None)
    if not containers.installed(provider):
        assert dag is None and not any(type(v).__name__ == "DAG" for v in vars(module).values())
        assert [r.getMessage() for r in caplog.records if r.name == module.__name__] == [
            f"{'apache-airflow-providers-docker' if 'docker' in provider else 'apache-airflow-providers-cncf-kubernetes'}"
            f" is not installed: {name} is not defined"]
    else:  # with the provider: the five jobs in a chain, each running the image
        assert dag.dag_id == name and dag.task_ids == list(containers.JOBS)
        for upstream, downstream in zip(containers.JOBS, containers.JOBS[1:]):
            assert dag.get_task(downstream).upstream_task_ids == {upstream}


def test_the_optional_providers_are_extras_and_not_test_dependencies():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("apache-airflow-providers-docker") for r in extras["docker"])
    assert any(r.startswith("apache-airflow-providers-cncf-kubernetes") for r in extras["kubernetes"])
    assert not any("providers-docker" in r or "cncf-kubernetes" in r for r in extras["test"])


def test_installed_tells_a_missing_parent_package_from_a_present_module():
    assert containers.installed("airflow.sdk") and containers.installed("airflow_provider_portfolio.cli")
    assert not containers.installed("airflow.providers.no_such_provider")
    assert not containers.installed("no_such_namespace.child.module")  # the parent is missing: no error


def test_the_dockerfile_documents_how_to_run_it():
    text = (REPO / "Dockerfile").read_text()
    commands = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#   docker ")]
    assert any(c.startswith("docker build -t airflow-portfolio") for c in commands)
    run_line = next(c for c in commands if c.startswith("docker run"))
    argv = shlex.split(run_line)
    image_args = argv[argv.index("airflow-portfolio") + 1:]
    args = cli.build_parser().parse_args(image_args)  # what follows the image is a CLI command
    assert args.command == "etl" and args.store == f"sqlite:///{containers.DATA_DIR}/portfolio.db"
    assert os.fspath(containers.DATA_DIR) in run_line
