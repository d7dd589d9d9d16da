# The image of the desk's Airflow cluster (docker-compose.yaml at the repository root): Airflow's own image with the
# provider installed. Not the provider's root Dockerfile, which is the `airflow-portfolio` CLI alone.
# Built from the repository root, so the root .dockerignore keeps everything but the package's sources out:
#
#   docker compose build                                   # both images of docker-compose.yaml
#   docker build -f docker/airflow.Dockerfile -t airflow-portfolio-airflow .
#   docker build -f docker/airflow.Dockerfile --build-arg AIRFLOW_VERSION=3.1.8 .   # the lowest supported Airflow
#
# AIRFLOW_VERSION: an Airflow the provider supports (pyproject: apache-airflow>=3.1.8,<4); the newest CI tests.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION
# Extras of the provider: postgres (psycopg 3, the store's driver), celery (the Celery executor); the GPU worker's
# image adds gpu (CuPy for CUDA 12).
ARG EXTRAS=postgres,celery
USER airflow
# The sources go to a folder under the image's working directory (AIRFLOW_HOME) for the install only.
COPY --chown=airflow:0 pyproject.toml README.md portfolio-src/
COPY --chown=airflow:0 airflow_provider_portfolio/ portfolio-src/airflow_provider_portfolio/
# apache-airflow pinned to the image's own version, so installing the provider never moves Airflow.
RUN pip install --no-cache-dir --disable-pip-version-check \
        "apache-airflow==${AIRFLOW_VERSION}" "./portfolio-src[${EXTRAS}]" \
    && rm -rf portfolio-src
# The folders the compose file mounts named volumes on, owned by the airflow user (a new volume takes them over):
# the provider's files shared by every worker (synthetic datasets, reports) and the API server's password file.
RUN mkdir -p /opt/airflow/portfolio /opt/airflow/auth
