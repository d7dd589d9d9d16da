"""Airflow hooks: a Connection in, a ready client out."""
