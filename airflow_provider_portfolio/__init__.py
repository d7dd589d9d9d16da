"""Trading-desk provider for Apache Airflow. Importing this package is cheap: version only."""

from __future__ import annotations

__version__ = "0.1.0"
