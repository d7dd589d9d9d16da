"""Airflow triggers run by the triggerer for the deferrable sensors."""
