"""Domain: calendars, the bar schema and its quality gate, data sources and failover, synthetic market.

Never imports Airflow.
"""
