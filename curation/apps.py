from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _sqlite_functions(sender, connection, **kwargs):
    """SQLite: the Unicode-aware lower() the text filters use (its own folds ASCII only)."""
    if connection.vendor == "sqlite":
        from curation.filters import LITE_LOWER, lite_lower

        connection.connection.create_function(LITE_LOWER, 1, lite_lower, deterministic=True)


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Datasets, samples and tags"

    def ready(self):
        connection_created.connect(_sqlite_functions, dispatch_uid="curation-sqlite-functions")
