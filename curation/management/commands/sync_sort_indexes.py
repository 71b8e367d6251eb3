"""Build the sort indexes of configured fields (PostgreSQL): for fields configured before Winnow built them,
or after restoring a database without them. `python manage.py sync_sort_indexes [--dataset ID]`."""

from django.core.management.base import BaseCommand, CommandError

from curation.filters import build_sort_indexes
from curation.models import Dataset, MetadataField


class Command(BaseCommand):
    help = "Build (or rebuild) the partial indexes that sort the sample list by each configured field."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", help="only this dataset's fields (its id)")

    def handle(self, *args, dataset=None, **options):
        fields = MetadataField.objects.order_by("dataset_id", "path")
        if dataset is not None:
            if not Dataset.objects.filter(pk=dataset).exists():
                raise CommandError(f"no dataset with id {dataset!r}")
            fields = fields.filter(dataset_id=dataset)
        for field in fields:
            built = build_sort_indexes(field.pk)
            self.stdout.write(f"{field.dataset_id} {field.path}: {', '.join(built) or 'nothing to build here'}")
