"""Test data made directly in the database, for tests that are not about how it gets there."""

from curation.models import Dataset, Sample


def make_samples(dataset, n, metadata=None):
    """Append n samples (img_000000.jpg, ...) with dense idx; metadata(idx) gives each one's metadata."""
    start = dataset.next_idx
    Sample.objects.bulk_create(
        [
            Sample(
                dataset=dataset,
                idx=start + i,
                file_name=f"img_{start + i:06d}.jpg",
                width=640,
                height=480,
                metadata=metadata(start + i) if metadata else {},
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    dataset.next_idx = start + n
    Dataset.objects.filter(pk=dataset.pk).update(next_idx=dataset.next_idx)
