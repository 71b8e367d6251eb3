"""Tags from sampling runs: the slider's top K of a succeeded run, saved as a tag of its dataset.

Lives in sampling, which builds on curation's tags; curation's tag API reaches it through
`curation.api.tags.TAG_SOURCES`, which this app fills in when it is ready.
"""

from __future__ import annotations

from curation import tagging
from curation.errors import DomainError
from curation.models import Dataset, Tag, TagOrigin
from sampling.models import ImportanceScore, RunStatus, SamplingRun


def tag_from_run(dataset: Dataset, run, top_k, name: str, creator=None, *, parent: Tag | None = None) -> Tag:
    """The slider's result: the samples ranked 1..top_k by a succeeded run; parent defaults to its input tag."""
    tagging.check_name(dataset, name)
    if not isinstance(run, SamplingRun):
        run_id = run
        run = SamplingRun.objects.filter(dataset=dataset, pk=run_id).first() if isinstance(run_id, str) else None
        if run is None:
            raise DomainError(f"no sampling run with id {run_id!r} in this dataset", "sampling_run")
    elif run.dataset_id != dataset.id:
        raise DomainError(f"no sampling run with id {run.pk!r} in this dataset", "sampling_run")
    if run.status != RunStatus.SUCCEEDED:
        raise DomainError(f"the run is {run.status}; only a succeeded run's scores make a tag", "sampling_run")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise DomainError(f"must be an integer, not {top_k!r}", "top_k")
    if not 1 <= top_k <= run.score_count:
        raise DomainError(f"must be between 1 and {run.score_count} (the run's scored samples)", "top_k")
    # Uses the (run, rank) unique index; one row per kept sample.
    indices = list(ImportanceScore.objects.filter(run=run, rank__lte=top_k).values_list("sample__idx", flat=True))
    if parent is None and run.input_tag_id:
        parent = run.input_tag
    return tagging.create_tag(
        dataset,
        name,
        indices,
        origin=TagOrigin.SAMPLING,
        origin_detail={"sampling_run": run.pk, "run_name": run.name, "strategy": run.strategy, "top_k": top_k},
        parent=parent,
        creator=creator,
    )


def tag_from_request(dataset: Dataset, name: str, data: dict, *, parent: Tag | None, creator) -> Tag:
    """`POST .../tags` with `sampling_run` and `top_k`."""
    return tag_from_run(dataset, data["sampling_run"], data["top_k"], name, creator, parent=parent)
