#!/bin/bash
# The portfolio store's database beside Airflow's: run by the postgres image once, when its data volume is empty
# (/docker-entrypoint-initdb.d). Database `portfolio`, owned by its own role $PORTFOLIO_DB_USER (password
# $PORTFOLIO_DB_PASSWORD), the login of connection portfolio_store_default. Airflow's metadata and Celery's results
# are in database `airflow` ($POSTGRES_DB), owned by $POSTGRES_USER.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v store_user="$PORTFOLIO_DB_USER" -v store_password="$PORTFOLIO_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'store_user', :'store_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'store_user') \gexec
SELECT format('CREATE DATABASE portfolio OWNER %I', :'store_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'portfolio') \gexec
SQL
