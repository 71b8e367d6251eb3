"""HTML pages. Thin: each page checks access through curation.access and hands ids to its ES module,
which reads and writes through the same JSON API as every other client."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from curation.access import get_dataset
from curation.models import ROLE_RANK, Role

DATASET_NAV = [
    ("overview", "Overview", "dataset-overview"),
    ("explore", "Explore", "dataset-explore"),
    ("map", "Embedding map", "dataset-map"),
    ("configurator", "Configurator", "dataset-configurator"),
    ("analyze", "Analyze & Filter", "dataset-analyze"),
    ("sampling", "Sampling", "dataset-sampling"),
    ("similar", "Similar", "dataset-similar"),
    ("duplicates", "Duplicates", "dataset-duplicates"),
    ("tags", "Tags", "dataset-tags"),
]
DATASET_PAGES = {key for key, _label, _url in DATASET_NAV}


@login_required
def datasets(request):
    return render(request, "curation/datasets.html", {"nav": "datasets"})


@login_required
def preferences(request):
    return render(request, "curation/preferences.html", {"nav": "preferences"})


@login_required
def dataset_page(request, dataset_id: str, page: str):
    if page not in DATASET_PAGES:  # the URLconf only routes known pages; this guards a misconfiguration
        raise ValueError(page)
    dataset = get_dataset(request.user, dataset_id)
    context = {
        "nav": page,
        "dataset": dataset,
        "dataset_nav": DATASET_NAV,
        "can_edit": ROLE_RANK[Role(dataset.caller_role)] >= ROLE_RANK[Role.EDITOR],
        "site_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, f"curation/{page}.html", context)
