"""Airflow sensors: market hours, deferrable."""
