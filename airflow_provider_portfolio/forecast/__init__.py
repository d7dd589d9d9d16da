"""Domain: forecasting on an array backend (CuPy or NumPy), baselines and the SSA family; never imports Airflow."""
