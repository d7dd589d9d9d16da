"""Domain: the portfolio store on SQLAlchemy Core (SQLite or PostgreSQL). Never imports Airflow."""
