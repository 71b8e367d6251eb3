"""Winnow: self-hosted data curation for image datasets.

This module imports nothing from Django so that `winnow.client` installs and runs on a training
machine that never starts the server. The Celery app is loaded lazily by `winnow.celery`.
"""

__version__ = "0.1.0"
