"""Suite-wide setup: an isolated AIRFLOW_HOME before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Tests never touch a developer's ~/airflow: every Airflow import in this process sees a private home.
_home = tempfile.mkdtemp(prefix="portfolio-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
for key in [k for k in os.environ if k.startswith(("AIRFLOW__PORTFOLIO__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
    del os.environ[key]
