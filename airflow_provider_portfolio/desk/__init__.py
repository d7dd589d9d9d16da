"""The jobs around the trader: environment checks and health monitoring (plain Python, no Airflow)."""
