"""Sample.dataset without a database foreign key: its check ran once per registered row, under the dataset's lock.

Samples are only inserted by curation.services._insert_new, which holds the dataset's row lock and inserts
nothing once the dataset is gone; deleting a dataset deletes its samples through Django's CASCADE as before.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0005_metadata_column_store"),
    ]

    operations = [
        migrations.AlterField(
            model_name="sample",
            name="dataset",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="samples",
                to="curation.dataset",
            ),
        ),
    ]
