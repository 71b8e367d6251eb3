"""Build the metadata column store (curation.columns) of every dataset with configured fields, or of one:
after restoring a database, or to have it ready before the first Analyze. `python manage.py build_metadata_columns
[--dataset ID]`. Runs here, not on a worker, and prints what it built."""

from django.core.management.base import BaseCommand, CommandError

from curation import columns
from curation.models import Dataset, MetadataField


class Command(BaseCommand):
    help = "Build (or rebuild) the typed per-field columns that Analyze, filter counts and the map read."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", help="only this dataset (its id)")

    def handle(self, *args, dataset=None, **options):
        if not columns.supported():
            raise CommandError("the metadata column store needs PostgreSQL; on SQLite everything stays in SQL")
        ids = MetadataField.objects.order_by("dataset_id").values_list("dataset_id", flat=True).distinct()
        if dataset is not None:
            if not Dataset.objects.filter(pk=dataset).exists():
                raise CommandError(f"no dataset with id {dataset!r}")
            ids = [dataset]
        for dataset_id in ids:
            built = columns.build(dataset_id)
            if built is None:
                self.stdout.write(f"{dataset_id}: nothing to build")
            else:
                self.stdout.write(
                    f"{dataset_id}: {', '.join(built['fields']) or 'no fields'} over {built['size']} samples "
                    f"(version {built['version']})"
                )
