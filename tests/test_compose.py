"""``docker-compose.yaml`` mirrors the tested cluster (``tests/cluster/cluster.py``), without a Docker engine.

No Docker here: the file is parsed with PyYAML (merge keys and anchors resolved as Compose resolves them) and its
``${VAR}`` references are interpolated the way Compose does, from ``docker/env.example``; ``docker compose config``
is not run. The harness's own settings are read from it, not copied: :meth:`Cluster._airflow_env` builds the
environment of every Airflow process and :meth:`Cluster._worker` each worker's command, without starting anything
(only the metadata URL, which ``Cluster.start`` sets from its server, is written here). Each check returns the
problems it finds, so the last tests feed it broken variants and see it fail. One test runs the PostgreSQL init
script on a private server on 127.0.0.1 (marker ``postgres``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from airflow_provider_portfolio.config import OPTIONS
from airflow_provider_portfolio.store import PortfolioStore
from tests.cluster.cluster import GPU_QUEUE, WORKERS, Cluster
from tests.pgserver import INSTALL_HINT, PostgresServer, find_bindir
from tests.test_dockerfile import ignored, instructions

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / "docker" / "env.example"
IMAGE = REPO / "docker" / "airflow.Dockerfile"
POSTGRES_INIT = REPO / "docker" / "postgres-init"

# The Airflow components the harness starts, one process each (literal: Cluster._start_airflow names them inline).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

# Settings of the harness that the compose file has the same value for.
EQUAL = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL",
    "AIRFLOW__PORTFOLIO__GPU_QUEUE",
    "AIRFLOW__PORTFOLIO__DEVICE",  # on the default worker; the GPU worker's `auto` is checked on its own
)
# Addresses: the same scheme and path (database, Redis db, API route); the host is the compose service of that role.
URLS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgres",
    "AIRFLOW__CELERY__RESULT_BACKEND": "postgres",
    "AIRFLOW__CELERY__BROKER_URL": "redis",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "api-server",
}
# Secrets: set in both, shared by every component; random per run in the harness, from .env in compose.
SECRETS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")
STORE_CONN = f"AIRFLOW_CONN_{OPTIONS['store_conn_id'][0].upper()}"
# Set differently on purpose: the compose value and why.
DIFFERENT = {
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": ("True", "a desk started by `docker compose up` trades nothing "
                                                   "until a DAG is unpaused; the harness's runs start at once"),
}
# Harness settings that belong to running every process on one machine, or to test speed.
HARNESS_ONLY = {
    "AIRFLOW__CORE__DAGS_FOLDER": "the harness's test DAGs; compose mounts ${PORTFOLIO_DAGS_DIR} at the image's one",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "two workers on one machine; each container has its own host name",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "the harness's REST client; compose's UI has a user and password",
    "AIRFLOW__API__HOST": "loopback; in compose the api-server listens in its container, published on 127.0.0.1",
    "AIRFLOW__API__PORT": "a free port; compose: 8080, published on 127.0.0.1",
    "AIRFLOW__API__BASE_URL": "built from the free port",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "test speed; Airflow's default in compose",
    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "test speed; Airflow's default in compose",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "free ports on one machine; logs are on a shared volume in compose",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "free ports on one machine; logs are on a shared volume in compose",
}
# Compose settings the harness does without.
COMPOSE_ONLY = {
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "the scheduler container's healthcheck",
    "AIRFLOW__PORTFOLIO__EXECUTION_MODE": "the user's choice in .env (synthetic by default, as in the harness)",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "the UI's login",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "the generated password, kept in a volume",
}
# Worker flags: mirrored, or harness-only (one machine; concurrency is AIRFLOW__CELERY__WORKER_CONCURRENCY in both).
WORKER_FLAGS = ("--queues", "--skip-serve-logs")
WORKER_FLAGS_HARNESS_ONLY = ("--concurrency", "--celery-hostname", "--pid")

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|FERNET_KEY|TOKEN|AUTH)$")
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")


# -- reading the files ------------------------------------------------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"env.example: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def tokens(value: str):
    """``value`` as Compose reads it: ``("text", str)`` and ``("ref", match of REFERENCE)`` in order (``$$`` is a
    literal ``$``). A bare ``$VAR`` or a malformed ``${...}`` is refused: the file always braces."""
    pos = 0
    for match in re.finditer(r"\$\$|\$\{[^}]*\}|\$", value):
        yield "text", value[pos:match.start()]
        token = match.group(0)
        if token == "$$":
            yield "text", "$"
        elif token == "$" or not REFERENCE.fullmatch(token):
            raise ValueError(f"not a Compose reference at {value[match.start():match.start() + 20]!r}")
        else:
            yield "ref", REFERENCE.fullmatch(token)
        pos = match.end()
    yield "text", value[pos:]


def references(value: str) -> list[re.Match]:
    return [token for kind, token in tokens(value) if kind == "ref"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """``value`` as Compose interpolates it from ``env``: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``$$``."""
    out = []
    for kind, token in tokens(value):
        if kind == "text":
            out.append(token)
            continue
        name, op, arg = token.group(1), token.group(2), token.group(3)
        present, given = name in env, bool(env.get(name))
        if op in (":?", "?") and not (given if op == ":?" else present):
            raise ValueError(f"${{{name}}} is required: {arg}")
        out.append(arg if op in (":-", "-") and not (given if op == ":-" else present) else env.get(name, ""))
    return "".join(out)


def strings(node: object):
    """Every string of a parsed document (keys and values)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def argv(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def airflow_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})}


def component(compose: dict, name: str) -> list[str]:
    """The compose services that run Airflow component ``name`` (``api-server``, ...)."""
    return [s for s, body in airflow_services(compose).items() if argv(body)[:1] == [name]]


def workers(compose: dict) -> dict[str, list[str]]:
    """Compose service -> its ``celery worker`` arguments."""
    return {s: argv(body)[2:] for s, body in airflow_services(compose).items() if argv(body)[:2] == ["celery", "worker"]}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def queues(args: list[str]) -> frozenset[str]:
    return frozenset((flag(args, "--queues") or "default").split(","))


def role_of(compose: dict, host: str) -> str:
    """``postgres``, ``redis`` or ``api-server``: what the compose service ``host`` runs."""
    body = compose["services"].get(host)
    if body is None:
        return "no such service"
    image = str(body.get("image", ""))
    if image.startswith(("postgres:", "redis:")):
        return image.partition(":")[0]
    return (argv(body) or ["?"])[0]


# -- the harness, read without starting it ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> SimpleNamespace:
    """The harness's Airflow environment and worker commands, as :class:`Cluster` builds them."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(root, root / "dags")
    cluster.redis = SimpleNamespace(port=6379)  # only their ports and user are read
    cluster.postgres = SimpleNamespace(port=5432, user="desk")
    pg = "desk@127.0.0.1:5432"
    cluster.airflow_url = f"postgresql+psycopg2://{pg}/airflow"  # literal: Cluster.start() sets it from the server
    env = cluster._airflow_env(pg)
    cluster.env = env
    worker_argv = {name: cluster._worker(name, spec).argv for name, spec in WORKERS.items()}
    worker_env = {name: cluster._worker(name, spec).env for name, spec in WORKERS.items()}
    concurrency = inspect.signature(Cluster).parameters["worker_concurrency"].default
    return SimpleNamespace(env=env, worker_argv=worker_argv, worker_env=worker_env, concurrency=concurrency)


def airflow_keys(env: dict[str, str]) -> set[str]:
    return {k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}


# -- the checks: each returns its problems ----------------------------------------------------------------------------


def service_problems(compose: dict) -> list[str]:
    problems = []
    for name in ("postgres", "redis", "airflow-init"):
        if name not in compose["services"]:
            problems.append(f"service {name} missing")
    for name in COMPONENTS:
        found = component(compose, name)
        if len(found) != 1:
            problems.append(f"Airflow {name}: {len(found)} services run it, not 1: {found}")
    harness_queues = sorted(sorted(frozenset(spec.split(","))) for spec in WORKERS.values())
    compose_queues = sorted(sorted(queues(args)) for args in workers(compose).values())
    if compose_queues != harness_queues:
        problems.append(f"workers serve {compose_queues}, the harness's {harness_queues}")
    return problems


def setting_problems(compose: dict, harness: SimpleNamespace, env: dict[str, str]) -> list[str]:
    """The worker without the GPU queue against the harness; then every Airflow container against that worker (one
    metadata database, broker, store and the same Fernet key and JWT secret everywhere)."""
    plain = [s for s, args in workers(compose).items() if GPU_QUEUE not in queues(args)]
    if not plain:
        return ["no worker without the GPU queue"]
    problems = []
    reference = compose["services"][plain[0]]["environment"]
    ours = {k: interpolate(str(v), env) for k, v in reference.items()}
    theirs = harness.env
    for key in EQUAL:
        if ours.get(key) != theirs.get(key):
            problems.append(f"{plain[0]}: {key} = {ours.get(key)!r}, the harness: {theirs.get(key)!r}")
    for key, role in URLS.items():
        if key not in ours:
            problems.append(f"{plain[0]}: {key} missing")
            continue
        a, b = urlsplit(ours[key]), urlsplit(theirs[key])
        if (a.scheme, a.path) != (b.scheme, b.path):
            problems.append(f"{plain[0]}: {key} is {a.scheme}://...{a.path}, the harness: {b.scheme}://...{b.path}")
        if role_of(compose, a.hostname or "") != role:
            problems.append(f"{plain[0]}: {key} points at {a.hostname}, not the {role} service")
    for key in SECRETS:
        if not ours.get(key):
            problems.append(f"{plain[0]}: secret {key} not set")
    for key, (value, _why) in DIFFERENT.items():
        if ours.get(key) != value:
            problems.append(f"{plain[0]}: {key} = {ours.get(key)!r}, meant {value!r}")
    problems += store_problems(compose, ours.get(STORE_CONN), json.loads(theirs[STORE_CONN]), plain[0])
    gpu_workers = {s for s, args in workers(compose).items() if GPU_QUEUE in queues(args)}
    for service, body in airflow_services(compose).items():
        for key in (*EQUAL, *URLS, *SECRETS, *DIFFERENT, STORE_CONN):
            if key == "AIRFLOW__PORTFOLIO__DEVICE" and service in gpu_workers:
                continue
            if body["environment"].get(key) != reference.get(key):
                problems.append(f"{service}: {key} differs from {plain[0]}'s")
    return problems


def store_problems(compose: dict, raw: str | None, theirs: dict, service: str) -> list[str]:
    if raw is None:
        return [f"{service}: {STORE_CONN} missing"]
    ours = json.loads(raw)
    problems = [f"{service}: store connection {k} = {ours.get(k)!r}, the harness: {theirs.get(k)!r}"
                for k in ("conn_type", "schema") if ours.get(k) != theirs.get(k)]
    if role_of(compose, ours.get("host", "")) != "postgres":
        problems.append(f"{service}: the store connection's host {ours.get('host')!r} is not the postgres service")
    return problems


def worker_problems(compose: dict, harness: SimpleNamespace) -> list[str]:
    """Each compose worker against the harness worker serving the same queues; only GPU workers get the GPU queue."""
    problems = []
    by_queues = {queues(a[a.index("worker") + 1:]): a[a.index("worker") + 1:] for a in harness.worker_argv.values()}
    for service, args in workers(compose).items():
        theirs = by_queues.get(queues(args))
        if theirs is None:
            problems.append(f"{service}: no harness worker serves {sorted(queues(args))}")
            continue
        for name in (f for f in theirs if f.startswith("--")):
            if name not in WORKER_FLAGS + WORKER_FLAGS_HARNESS_ONLY:
                problems.append(f"harness worker flag {name}: neither mirrored nor explained")
        for name in WORKER_FLAGS:
            if (name in theirs) != (name in args):
                problems.append(f"{service}: {name} {'missing' if name in theirs else 'not in the harness'}")
        body = compose["services"][service]
        device = body["environment"].get("AIRFLOW__PORTFOLIO__DEVICE")
        extras = str((body.get("build") or {}).get("args", {}).get("EXTRAS", "")).split(",")
        gpu = GPU_QUEUE in queues(args)
        if gpu and (device != "auto" or "gpu" not in extras):
            problems.append(f"{service} serves {GPU_QUEUE} but device={device!r}, extras={extras}")
        if not gpu and (device != "cpu" or "gpu" in extras):
            problems.append(f"{service} does not serve {GPU_QUEUE} but device={device!r}, extras={extras}")
    return problems


def port_problems(compose: dict) -> list[str]:
    problems = []
    for name, body in compose["services"].items():
        for port in body.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).rsplit(":", 2)
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port!r} is not bound to 127.0.0.1")
    return problems


def secret_problems(compose: dict) -> list[str]:
    """Secrets only as required references (``${VAR}``/``${VAR:?...}``): no literal, no default."""
    problems = []

    def check(where: str, value: str) -> None:
        if not REQUIRED_REFERENCE.match(value):
            problems.append(f"{where}: {value!r} is not a reference to .env without a default")

    for text in strings(compose):
        # Each reference masked (its error message may hold spaces or colons), then the URLs' user:password@.
        refs: list[re.Match] = []
        masked = ""
        for kind, token in tokens(text):
            if kind == "ref":
                refs.append(token)
                if SECRET_NAME.search(token.group(1)) and token.group(2) in (":-", "-"):
                    problems.append(f"{token.group(0)!r}: a default for a secret")
                token = f"\x01{len(refs) - 1}\x01"
            masked += token
        for userinfo in re.findall(r"[a-z][a-z0-9+.-]*://([^/@\s]*)@", masked):
            if ":" in userinfo:
                password = re.sub(r"\x01(\d+)\x01", lambda m: refs[int(m.group(1))].group(0),
                                  userinfo.partition(":")[2])
                check("password in a URL", password)
        if text.lstrip().startswith("{") and '"conn_type"' in text:
            password = json.loads(text).get("password")
            if password is not None:
                check("password of a connection", password)
    for name, body in compose["services"].items():
        for key, value in (body.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                check(f"{name}: {key}", str(value))
        args = argv(body)
        for i, arg in enumerate(args[:-1]):
            if arg == "--requirepass":
                check(f"{name}: --requirepass", args[i + 1])
    return problems


def dependency_problems(compose: dict) -> list[str]:
    """Long-running services have a healthcheck; every dependency waits on a condition; Airflow waits on init."""
    problems = []
    for name, body in compose["services"].items():
        if name != "airflow-init" and "healthcheck" not in body:
            problems.append(f"{name}: no healthcheck")
        depends = body.get("depends_on", {})
        if not isinstance(depends, dict) or any("condition" not in v for v in depends.values()):
            problems.append(f"{name}: depends_on without conditions")
            continue
        if name in airflow_services(compose):
            for needed in ("postgres", "redis"):
                if depends.get(needed, {}).get("condition") != "service_healthy":
                    problems.append(f"{name}: does not wait for {needed} healthy")
            if name != "airflow-init" and (depends.get("airflow-init", {}).get("condition")
                                           != "service_completed_successfully"):
                problems.append(f"{name}: does not wait for airflow-init to complete")
    for service in workers(compose):
        api = component(compose, "api-server")
        if not api or compose["services"][service]["depends_on"].get(api[0], {}).get("condition") != "service_healthy":
            problems.append(f"{service}: does not wait for the api-server (the task execution API)")
    return problems


# -- the tests --------------------------------------------------------------------------------------------------------


def test_the_same_services_as_the_harness():
    assert service_problems(load_compose()) == []


def test_the_settings_are_the_harness_settings(harness):
    assert setting_problems(load_compose(), harness, env_example()) == []


def test_every_setting_of_either_is_mirrored_or_explained(harness):
    mirrored = set(EQUAL) | set(URLS) | set(SECRETS) | set(DIFFERENT) | {STORE_CONN}
    theirs = airflow_keys(harness.env) | set().union(*(airflow_keys(e) for e in harness.worker_env.values()))
    assert theirs - mirrored - set(HARNESS_ONLY) == set()
    assert mirrored - theirs == set(), "a mirrored setting the harness no longer has"
    ours = set().union(*(airflow_keys(s["environment"]) for s in airflow_services(load_compose()).values()))
    assert ours - mirrored - set(COMPOSE_ONLY) == set()
    assert set(HARNESS_ONLY).isdisjoint(ours), "explained as harness-only, yet set in compose"


def test_the_workers_are_the_harness_workers_and_only_the_gpu_worker_serves_the_gpu_queue(harness):
    compose = load_compose()
    assert worker_problems(compose, harness) == []
    gpu = [s for s, args in workers(compose).items() if GPU_QUEUE in queues(args)]
    assert len(gpu) == sum(GPU_QUEUE in spec.split(",") for spec in WORKERS.values()) == 1
    # Concurrency: the harness's default, unless .env says otherwise.
    common = compose["services"]["airflow-worker"]["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
    assert interpolate(common, {}) == env_example()["AIRFLOW_WORKER_CONCURRENCY"] == str(harness.concurrency)


def test_the_gpu_worker_documents_its_nvidia_reservation():
    text = COMPOSE.read_text()
    block = text[text.index("\n  airflow-worker-gpu:"):text.index("\nvolumes:")]
    commented = [line.strip().lstrip("#").strip() for line in block.splitlines() if line.strip().startswith("#")]
    for expected in ("deploy:", "resources:", "reservations:", "devices:", "- driver: nvidia", "capabilities: [gpu]"):
        assert any(line.startswith(expected) for line in commented), expected
    assert "deploy" not in load_compose()["services"]["airflow-worker-gpu"], "left commented: no GPU needed to start"


def test_published_ports_are_bound_to_loopback():
    compose = load_compose()
    assert port_problems(compose) == []
    assert compose["services"][component(compose, "api-server")[0]]["ports"] == ["127.0.0.1:8080:8080"]


def test_no_secret_is_written_in_the_file():
    assert secret_problems(load_compose()) == []


def test_env_example_defines_every_reference_with_fake_secrets():
    compose, example = load_compose(), env_example()
    referenced = {m.group(1) for text in strings(compose) for m in references(text)}
    assert referenced - set(example) == set(), "referenced but not in docker/env.example"
    assert set(example) - referenced == set(), "in docker/env.example but unused"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "change-me", key
    # What `docker compose config` would do with it: every reference resolves, the connection is JSON.
    resolved = [interpolate(text, example) for text in strings(compose)]
    conn = next(text for text in resolved if '"conn_type"' in text)
    assert json.loads(conn)["password"] == "change-me"
    with pytest.raises(ValueError, match="PORTFOLIO_DB_PASSWORD"):
        interpolate(compose["services"]["postgres"]["environment"]["PORTFOLIO_DB_PASSWORD"], {})


def test_healthchecks_and_dependencies():
    assert dependency_problems(load_compose()) == []


def test_init_migrates_and_runs_the_providers_setup():
    init = " ".join(argv(load_compose()["services"]["airflow-init"]))
    assert "airflow db migrate && airflow-portfolio setup" in init


def test_logs_and_the_providers_files_are_shared_by_every_airflow_container():
    for name, body in airflow_services(load_compose()).items():
        targets = {str(v).split(":")[-2] if str(v).endswith(":ro") else str(v).split(":")[-1]
                   for v in body.get("volumes", [])}
        assert {"/opt/airflow/logs", "/opt/airflow/portfolio", "/opt/airflow/dags"} <= targets, name
    for args in workers(load_compose()).values():
        assert "--skip-serve-logs" in args  # the api-server reads the shared volume


def test_postgres_holds_airflows_database_and_the_store():
    compose = load_compose()
    postgres = compose["services"]["postgres"]
    metadata = urlsplit(interpolate(compose["services"]["airflow-scheduler"]["environment"][
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], env_example())).path.lstrip("/")
    assert postgres["environment"]["POSTGRES_DB"] == metadata == "airflow"
    assert "./docker/postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    scripts = sorted(POSTGRES_INIT.glob("*.sh"))
    assert scripts and all(p.stat().st_mode & 0o111 for p in scripts)
    store = json.loads(interpolate(compose["services"]["airflow-worker"]["environment"][STORE_CONN], env_example()))
    assert f"CREATE DATABASE {store['schema']} OWNER" in scripts[0].read_text()


@pytest.mark.postgres
def test_the_init_script_makes_a_store_database_its_role_owns():
    """The script as the postgres image runs it (superuser ``$POSTGRES_USER``, database ``$POSTGRES_DB``), on a
    private server: role and database created, a second run changes nothing, the store migrates as that role."""
    if find_bindir() is None:
        pytest.fail(f"{INSTALL_HINT} (make system-deps)")
    script = next(POSTGRES_INIT.glob("*.sh"))
    with PostgresServer(user="airflow", database="airflow") as server:
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "POSTGRES_USER": "airflow",
               "POSTGRES_DB": "airflow", "PORTFOLIO_DB_USER": "desk", "PORTFOLIO_DB_PASSWORD": "test-password"}
        for _ in range(2):
            proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        store = PortfolioStore(f"postgresql+psycopg://desk@127.0.0.1:{server.port}/portfolio")
        try:
            assert store.migrate() > 0
        finally:
            store.dispose()
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=server.port, user="airflow", dbname="portfolio") as conn:
            owner, = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'portfolio'").fetchone()
            login, password = conn.execute("SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid "
                                           "WHERE rolname = 'desk'").fetchone()
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = 'desk'"
                                  ).fetchone()[0]
        assert (owner, login, password) == ("desk", True, True)
        assert tables > 0


# -- the image --------------------------------------------------------------------------------------------------------


def image_args() -> dict[str, str]:
    return {a.partition("=")[0]: a.partition("=")[2] for w, a in instructions(IMAGE) if w == "ARG" and "=" in a}


def test_the_image_is_airflows_own_at_a_supported_version():
    steps, args = instructions(IMAGE), image_args()
    assert [a for w, a in steps if w == "FROM"] == ["apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    airflow_spec = next(d for d in project["dependencies"] if d.startswith("apache-airflow"))
    assert Version(args["AIRFLOW_VERSION"]) in SpecifierSet(airflow_spec.removeprefix("apache-airflow"))
    assert Version(args["PYTHON_VERSION"]) in SpecifierSet(project["requires-python"])
    installs = [a for w, a in steps if w == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in installs[0] and "[${EXTRAS}]" in installs[0]
    assert ("USER", "airflow") in steps
    for body in airflow_services(load_compose()).values():
        assert body["build"]["context"] == "." and body["build"]["dockerfile"] == "docker/airflow.Dockerfile"


def test_the_image_copies_only_what_the_build_context_keeps():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [s.rstrip("/") for w, a in instructions(IMAGE) if w == "COPY"
               for s in a.split()[:-1] if not s.startswith("--")]
    assert sorted(sources) == ["README.md", "airflow_provider_portfolio", "pyproject.toml"]
    assert not any(ignored(s, patterns) for s in sources)


def declared_extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_the_images_extras_are_the_providers():
    compose = load_compose()
    wanted = {image_args()["EXTRAS"]} | {str(b["build"].get("args", {}).get("EXTRAS", ""))
                                         for b in airflow_services(compose).values()}
    extras = {e for spec in wanted for e in spec.split(",") if e}
    assert {"postgres", "celery", "gpu"} <= extras
    assert extras <= declared_extras()


# -- the checks fail on a broken file ---------------------------------------------------------------------------------


def broken(change) -> dict:
    """The compose file with one ``change`` made to its services, each service's settings its own copy (YAML
    anchors share one dict between services)."""
    compose = json.loads(json.dumps(load_compose()))
    change(compose["services"])
    return compose


def _set_env(service: str, key: str, value: str):
    return lambda s: s[service]["environment"].__setitem__(key, value)


def _set_command(service: str, command: list[str]):
    return lambda s: s[service].__setitem__("command", command)


BROKEN = {
    "the GPU worker without the gpu queue": (_set_command("airflow-worker-gpu", ["celery", "worker", "--queues",
                                                                              "default", "--skip-serve-logs"]),
                                             ("service", "worker")),
    "the plain worker also on the gpu queue": (_set_command("airflow-worker", ["celery", "worker", "--queues",
                                                                           "default,gpu", "--skip-serve-logs"]),
                                               ("service", "worker")),
    "a misspelt gpu queue": (_set_command("airflow-worker-gpu", ["celery", "worker", "--queues", "default,gpus",
                                                                 "--skip-serve-logs"]), ("service", "worker")),
    "no triggerer": (lambda s: s.pop("airflow-triggerer"), ("service",)),
    "LocalExecutor": (_set_env("airflow-worker", "AIRFLOW__CORE__EXECUTOR", "LocalExecutor"), ("setting",)),
    "Airflow's heartbeat timeout": (_set_env("airflow-worker", "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
                                             "300"), ("setting",)),
    "another gpu_queue": (_set_env("airflow-worker", "AIRFLOW__PORTFOLIO__GPU_QUEUE", "cuda"), ("setting",)),
    "the store in Airflow's database": (_set_env("airflow-worker", STORE_CONN, json.dumps({
        "conn_type": "postgres", "host": "postgres", "schema": "airflow"})), ("setting",)),
    "the broker on the postgres host": (_set_env("airflow-worker", "AIRFLOW__CELERY__BROKER_URL",
                                                 "redis://postgres:6379/0"), ("setting",)),
    "no device on the GPU worker": (_set_env("airflow-worker-gpu", "AIRFLOW__PORTFOLIO__DEVICE", "cpu"), ("worker",)),
    "serving logs": (_set_command("airflow-worker", ["celery", "worker", "--queues", "default"]), ("worker",)),
    "a port on every interface": (lambda s: s["airflow-apiserver"].__setitem__("ports", ["8080:8080"]), ("port",)),
    "a literal password in a URL": (_set_env("airflow-worker", "AIRFLOW__CELERY__BROKER_URL",
                                             "redis://:hunter2@redis:6379/0"), ("secret",)),
    "another JWT secret on the api-server": (_set_env("airflow-apiserver", "AIRFLOW__API_AUTH__JWT_SECRET",
                                                      "${OTHER_JWT_SECRET}"), ("setting",)),
    "a default for a secret": (_set_env("postgres", "POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-airflow}"),
                               ("secret",)),
    "a literal Fernet key": (_set_env("airflow-scheduler", "AIRFLOW__CORE__FERNET_KEY", "test-key"), ("secret",)),
    "no healthcheck": (lambda s: s["redis"].pop("healthcheck"), ("dependency",)),
    "a worker not waiting for init": (lambda s: s["airflow-worker"]["depends_on"].pop("airflow-init"),
                                      ("dependency",)),
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_the_checks_catch_a_broken_file(what, harness):
    change, kinds = BROKEN[what]
    compose = broken(change)
    found = {
        "service": service_problems(compose),
        "setting": setting_problems(compose, harness, env_example()),
        "worker": worker_problems(compose, harness),
        "port": port_problems(compose),
        "secret": secret_problems(compose),
        "dependency": dependency_problems(compose),
    }
    for kind in kinds:
        assert found[kind], f"{what}: the {kind} check found nothing"


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("a${SET}b$${SET}", env) == "ax" + "b${SET}"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "d||d"
    with pytest.raises(ValueError):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(ValueError):
        interpolate("$SET", env)
