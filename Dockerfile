# The desk's jobs in a container: the image runs `airflow-portfolio`, so `docker run IMAGE etl --store URL` is
# `airflow-portfolio etl --store URL` (etl, forecast, trade, discover, rebalance, report, ...; `--help` lists them).
# No Airflow scheduler or metadata database is needed inside: connections come as AIRFLOW_CONN_<ID> variables,
# Variables as AIRFLOW_VAR_<NAME>, the store as --store (a PostgreSQL URL, or a SQLite file on a mounted volume).
# The example DAGs portfolio_docker and portfolio_kubernetes run it.
#
#   docker build -t airflow-portfolio .
#   docker build -t airflow-portfolio --build-arg EXTRAS=postgres,slack --build-arg AIRFLOW_VERSION=3.1.8 .
#   docker run --rm -v portfolio-data:/data airflow-portfolio etl --store sqlite:////data/portfolio.db

ARG PYTHON_VERSION=3.11

# The provider's wheel, built from the sources alone (.dockerignore keeps everything else out).
FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY airflow_provider_portfolio/ airflow_provider_portfolio/
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
# Extras of the provider installed with it (postgres: the psycopg driver of a PostgreSQL store), and the Airflow
# version (empty: the newest the provider allows).
ARG EXTRAS=postgres
ARG AIRFLOW_VERSION=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/portfolio/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow
# The wheel is mounted from the first stage for this step only (BuildKit, the default builder since Docker 23):
# nothing of it stays in a layer.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m venv /opt/portfolio \
    && wheel="$(ls /wheels/*.whl)" \
    && /opt/portfolio/bin/pip install --no-cache-dir --disable-pip-version-check \
        "${wheel}[${EXTRAS}]" ${AIRFLOW_VERSION:+"apache-airflow==${AIRFLOW_VERSION}"}
# A user of its own, uid 50000 in group 0 as in Airflow's images (OpenShift runs any uid in group 0); AIRFLOW_HOME
# (the embedded SQLite store's folder, $AIRFLOW_HOME/portfolio) and /data (a volume for the store and the reports)
# are writable by the group.
RUN useradd --uid 50000 --gid 0 --home-dir "$AIRFLOW_HOME" --create-home --shell /usr/sbin/nologin portfolio \
    && mkdir -p /data "$AIRFLOW_HOME/portfolio" \
    && chown -R 50000:0 /data "$AIRFLOW_HOME" \
    && chmod -R g+rwX /data "$AIRFLOW_HOME"
USER 50000
WORKDIR /opt/airflow
ENTRYPOINT ["airflow-portfolio"]
CMD ["--help"]
