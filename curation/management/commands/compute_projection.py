"""`manage.py compute_projection <embedding id>`: the map projection of one embedding, in this process, with its
address space capped at WINNOW_PROJECTION_MEMORY_BYTES. The embedded default's web server runs it as a child
process (curation/projection_child.py), which also bounds its time."""

from __future__ import annotations

import resource

from django.conf import settings
from django.core.management.base import BaseCommand

from curation import embeddings


class Command(BaseCommand):
    help = "Compute an embedding's map projection (capped at WINNOW_PROJECTION_MEMORY_BYTES); prints its status."

    def add_arguments(self, parser):
        parser.add_argument("embedding_id")

    def handle(self, *args, embedding_id: str, **options):
        memory = settings.WINNOW_PROJECTION_MEMORY_BYTES
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        self.stdout.write(embeddings.compute_projection(embedding_id) or "")
