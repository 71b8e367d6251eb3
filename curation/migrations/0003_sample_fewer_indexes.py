"""Drop the sample indexes that no query needs, so that registering a sample maintains three fewer.

`dataset_id` alone (and its `varchar_pattern_ops` twin) is covered by the unique (dataset, idx) and
(dataset, file_name) indexes, which start with it. The `varchar_pattern_ops` index Django adds beside a
varchar primary key serves `LIKE 'abc%'` on sample ids, which nothing asks. PostgreSQL only.
"""

import django.db.models.deletion
from django.db import migrations, models


def _id_like_indexes(schema_editor) -> list[str]:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'curation_sample'"
            " AND indexdef LIKE '%%(id varchar_pattern_ops)%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def drop_id_like(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in _id_like_indexes(schema_editor):
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def create_id_like(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql" and not _id_like_indexes(schema_editor):
        schema_editor.execute("CREATE INDEX curation_sample_id_like ON curation_sample (id varchar_pattern_ops)")


class Migration(migrations.Migration):
    dependencies = [("curation", "0002_sample_metadata_gin")]

    operations = [
        migrations.AlterField(
            model_name="sample",
            name="dataset",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="samples",
                to="curation.dataset",
            ),
        ),
        migrations.RunPython(drop_id_like, create_id_like, elidable=False),
    ]
