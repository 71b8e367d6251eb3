"""Before dataset names become unique per owner (in any case, 0011): rename the duplicates that exist.

In each group of one owner's datasets whose names are equal in any case (lower() as the database computes it, the
very expression the constraint indexes), the oldest keeps its name and each later one gets " (2)", " (3)", ... (the
first suffix no dataset of that owner has, the name cut to fit 200 characters). Nothing is deleted; ids, samples
and members stay. Not undone on the way back (the renamed names are as good as the old ones).
"""

from django.db import migrations
from django.db.models import Count, Value
from django.db.models.functions import Lower

MAX_NAME = 200


def rename_duplicates(apps, schema_editor):
    Dataset = apps.get_model("curation", "Dataset")
    alias = schema_editor.connection.alias
    datasets = Dataset.objects.using(alias)
    groups = (
        datasets.annotate(key=Lower("name"))
        .values("owner_id", "key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("owner_id", "key")
    )
    for group in list(groups):
        same = datasets.annotate(key=Lower("name")).filter(owner_id=group["owner_id"], key=group["key"])
        later = list(same.order_by("created_at", "id").values_list("id", "name"))[1:]
        number = 2
        for dataset_id, name in later:
            while True:
                suffix = f" ({number})"
                candidate = name[: MAX_NAME - len(suffix)].rstrip() + suffix
                number += 1
                clash = datasets.annotate(key=Lower("name")).filter(
                    owner_id=group["owner_id"], key=Lower(Value(candidate))
                )
                if not clash.exists():
                    break
            datasets.filter(pk=dataset_id).update(name=candidate)


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0009_prediction_tasks"),
    ]

    operations = [
        migrations.RunPython(rename_duplicates, migrations.RunPython.noop, elidable=False),
    ]
