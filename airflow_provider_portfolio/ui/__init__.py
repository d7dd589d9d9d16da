"""The Portfolio page in the Airflow UI: a FastAPI app the provider's plugin mounts at ``/portfolio``.

:mod:`~airflow_provider_portfolio.ui.queries` reads the store (bounded reads, plain Python);
:mod:`~airflow_provider_portfolio.ui.app` serves them as JSON and the page (:mod:`~airflow_provider_portfolio.ui.page`)
to signed-in Airflow users only. Importing this package is cheap: the app is imported by the api-server alone.
"""
