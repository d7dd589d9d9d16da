"""Domain: signals, decisions, risk limits, orders and their ids, brokers; never imports Airflow."""
