"""Tag arithmetic and metadata filters over 100,000 samples, through the REST API, on PostgreSQL.

Each measurement is compared with a reference measured in the same run on the same data: the
straightforward way that loads every sample as a model instance and decides in Python.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_api SECRET_KEY=bench \
        .venv/bin/python benchmarks/bench_api_scale.py [--samples 150000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import django_environment, setup_database

django_environment("winnow_bench_api")
setup_database()  # creates the database if missing, then migrates

import numpy as np  # noqa: E402
from _report import write_section  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from curation import bitmask  # noqa: E402
from curation.models import Sample, Tag, TagOrigin  # noqa: E402
from curation.services import create_dataset, delete_dataset  # noqa: E402
from winnow.accounts.models import ApiToken  # noqa: E402

SCENARIOS = ["sunny", "cloudy", "rainy", "foggy", "snowy", "night"]


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def setup(n: int):
    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench")
    for old in user.owned_datasets.all():
        delete_dataset(old)
    dataset = create_dataset(user, "bench", "meta")
    rng = np.random.default_rng(0)
    scenario = rng.choice(SCENARIOS, size=n, p=[0.5, 0.25, 0.1, 0.07, 0.05, 0.03])
    temperature = rng.normal(15, 10, size=n).round(1)
    pedestrians = rng.poisson(3, size=n)
    Sample.objects.bulk_create(
        (
            Sample(
                dataset=dataset,
                idx=i,
                file_name=f"frames/{i:07d}.jpg",
                metadata={
                    "weather": {"scenario": str(scenario[i]), "temperature": float(temperature[i])},
                    "number_of_pedestrians": int(pedestrians[i]),
                },
            )
            for i in range(n)
        ),
        batch_size=5000,
    )
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    half = n // 3
    tags = []
    for name, lo, hi in [("first", 0, n - half), ("second", half, n)]:
        mask = bitmask.from_indices(np.arange(lo, hi), size=n)
        tags.append(
            Tag.objects.create(dataset=dataset, name=name, bitmask=mask, count=hi - lo, origin=TagOrigin.SELECTION)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _token, key = ApiToken.issue(user, "bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return dataset, tags, client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=150_000)
    args = parser.parse_args()
    n = args.samples
    dataset, (tag_a, tag_b), client = setup(n)
    base = f"/api/v1/datasets/{dataset.id}"
    rows = []
    counter = iter(range(10**9))

    # --- tag arithmetic: union of two tags of ~100,000 samples each
    def api_union():
        response = client.post(
            f"{base}/tags",
            {"name": f"union-{next(counter)}", "operation": "union", "tags": [tag_a.id, tag_b.id]},
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()["count"]

    def reference_union():
        # Load each tag's samples as instances, union their ids in Python.
        a = {s.id for s in Sample.objects.filter(dataset=dataset) if s.idx < n - n // 3}
        b = {s.id for s in Sample.objects.filter(dataset=dataset) if s.idx >= n // 3}
        return len(a | b)

    with CaptureQueriesContext(connection) as queries:
        api_union()
    union_queries = len(queries)
    t_api, count_api = best_of(api_union)
    t_ref, count_ref = best_of(reference_union, repeat=1)
    assert count_api == count_ref == n
    rows.append(("union of two tags of %d samples (API)" % tag_a.count, t_api, t_ref, union_queries))

    # --- metadata filter: rainy and warmer than 20 degrees, listed and saved as a tag
    where = {"where": ["weather.scenario:eq:rainy", "weather.temperature:gt:20"], "limit": 1000, "count": "true"}

    def api_filter_list():
        response = client.get(f"{base}/samples", where)
        assert response.status_code == 200, response.content
        return response.json()["count"]

    def api_filter_tag():
        response = client.post(
            f"{base}/tags",
            {
                "name": f"warm-rain-{next(counter)}",
                "filter": {
                    "conditions": [
                        {"path": "weather.scenario", "op": "eq", "value": "rainy"},
                        {"path": "weather.temperature", "op": "gt", "value": 20},
                    ]
                },
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()["count"]

    def reference_filter():
        return sum(
            1
            for s in Sample.objects.filter(dataset=dataset)
            if s.metadata["weather"]["scenario"] == "rainy" and s.metadata["weather"]["temperature"] > 20
        )

    with CaptureQueriesContext(connection) as queries:
        api_filter_tag()
    filter_queries = len(queries)
    t_list, count_list = best_of(api_filter_list)
    t_tag, count_tag = best_of(api_filter_tag)
    t_ref, count_ref = best_of(reference_filter, repeat=1)
    assert count_list == count_tag == count_ref, (count_list, count_tag, count_ref)
    rows.append((f"filter over {n} samples: first page + count (API)", t_list, t_ref, None))
    rows.append((f"filter over {n} samples saved as a tag (API)", t_tag, t_ref, filter_queries))

    lines = [
        "## Tag arithmetic and metadata filters at 100,000+ samples",
        "",
        f"{n} samples with metadata on PostgreSQL; tags `first` and `second` of {tag_a.count} samples each.",
        "Reference: load every sample as a model instance and decide in Python (same data, same run).",
        "",
        "| operation | Winnow (s) | reference (s) | speed-up | SQL queries |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ours, ref, nq in rows:
        lines.append(f"| {name} | {ours:.3f} | {ref:.3f} | {ref / ours:.1f}x | {nq if nq is not None else '-'} |")
    lines += [
        "",
        "Reproduce: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_api SECRET_KEY=bench "
        ".venv/bin/python benchmarks/bench_api_scale.py`",
    ]
    write_section("api-scale", "\n".join(lines))
    print("\n".join(lines))
    delete_dataset(dataset)
    reset_queries()


if __name__ == "__main__":
    main()
