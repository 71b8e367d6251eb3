"""A GIN (jsonb_path_ops) index on Sample.metadata, so `eq` filters (`metadata @> ...`) use an index.

PostgreSQL only: on SQLite (the embedded default) there is no such index and the migration does nothing.
"""

from django.db import migrations

INDEX = "curation_sample_metadata_gin"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON curation_sample USING gin (metadata jsonb_path_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("curation", "0001_initial")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
