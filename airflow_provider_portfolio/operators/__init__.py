"""Airflow operators: parameters and context in, domain calls, small JSON summary out."""
