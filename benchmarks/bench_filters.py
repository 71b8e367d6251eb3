"""Metadata filters and sorted pages over a dataset of 100,000 samples, in SQL (never sample by sample).

Measured in one run, on one `meta` dataset whose samples carry Lightly-style street-scene metadata
(`weather.scenario`, `weather.temperature`, `number_of_pedestrians`; some samples lack the temperature,
which has a configured fallback):
- registration: `curation.services.add_samples` in batches of 10,000 (what the JSON endpoint runs);
- each filter through `GET /api/v1/datasets/{id}/samples` (first page of 100, with `count=true`), and
  the same page reached through 20 `next` links when sorted by a metadata path;
- reference: loading every sample's metadata into Python and filtering there, the one-by-one way.
Also reported: the SQL statements each request ran, and whether PostgreSQL used the GIN index for `eq`.

Uses a database of its own (created if missing, tables by `migrate`), never the app's:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_filters .venv/bin/python benchmarks/bench_filters.py [--n 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import django_environment, setup_database

django_environment("winnow_bench_filters")

from _report import write_section  # noqa: E402

DATASET_NAME = "bench-filters"
SCENARIOS = ["clear"] * 60 + ["rain"] * 25 + ["fog"] * 10 + ["snow"] * 4 + ["hail"]
FILTERS = [
    ("eq on a category (rare value)", ["weather.scenario:eq:hail"]),
    ("gt on a number, fallback applies", ["weather.temperature:lt:0"]),
    ("in + range, AND", ['weather.scenario:in:["rain", "snow"]', "number_of_pedestrians:gte:5"]),
    ("exists false", ["weather.temperature:exists:false"]),
]


def metadata(rng: random.Random) -> dict:
    weather = {"scenario": rng.choice(SCENARIOS)}
    if rng.random() < 0.9:  # a tenth of the samples lack the temperature: the fallback covers them
        weather["temperature"] = round(rng.uniform(-15, 35), 1)
    return {"weather": weather, "number_of_pedestrians": rng.randint(0, 12)}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    setup_database()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from curation.filters import parse_conditions
    from curation.metadata import get_path
    from curation.models import Dataset, FieldType, MetadataField, Sample
    from curation.services import add_samples, create_dataset

    user, _ = get_user_model().objects.get_or_create(username="bench")
    Dataset.objects.filter(name=DATASET_NAME, owner=user).delete()
    dataset = create_dataset(user, DATASET_NAME, "meta")
    rng = random.Random(7)
    rows = [{"file_name": f"cam{i % 4}/{i:07d}.jpg", "metadata": metadata(rng)} for i in range(args.n)]
    batch = 10_000
    register_s, _ = timed(lambda: [add_samples(dataset, rows[s : s + batch]) for s in range(0, args.n, batch)])
    MetadataField.objects.create(dataset=dataset, path="weather.temperature", type=FieldType.FLOAT, fallback=-1.0)
    with connection.cursor() as cur:
        cur.execute("ANALYZE curation_sample")

    client = APIClient()
    client.force_authenticate(user)
    base = f"/api/v1/datasets/{dataset.id}/samples"
    lines = [
        f"One `meta` dataset of {args.n:,} samples. Registration through `add_samples` in batches of "
        f"{batch:,}: **{register_s:.1f} s** ({args.n / register_s:,.0f} samples/s).",
        "",
        "| filter | matches | first page + count | SQL statements | load-all reference | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    client.get(base, {"limit": 1})  # warm up: the first request of a process imports and resolves
    # The one-by-one reference: every sample's metadata into Python, filtered there.
    for label, where in FILTERS:
        conditions = parse_conditions(where, field="where")

        def reference():
            hits = 0
            for meta in Sample.objects.filter(dataset=dataset).values_list("metadata", flat=True).iterator(5000):
                ok = True
                for cond in conditions:
                    try:
                        value = get_path(meta, cond.path)
                    except KeyError:
                        value = None
                    if cond.op == "exists":
                        ok = (value is not None) == cond.value
                    elif value is None:
                        ok = cond.path == "weather.temperature" and cond.matches(-1.0)
                    else:
                        ok = cond.matches(value)
                    if not ok:
                        break
                hits += ok
            return hits

        with CaptureQueriesContext(connection) as queries:
            api_s, response = timed(lambda: client.get(base, {"where": where, "limit": 100, "count": "true"}))
        body = response.json()
        ref_s, ref_hits = timed(reference)
        assert response.status_code == 200, body
        assert body["count"] == ref_hits, (label, body["count"], ref_hits)
        lines.append(
            f"| {label} | {ref_hits:,} | {api_s * 1000:.0f} ms | {len(queries)} | "
            f"{ref_s * 1000:.0f} ms | {ref_s / api_s:.0f}x |"
        )

    # A deep page of a list sorted by a metadata path: 20 `next` links, 100 samples each.
    def walk():
        url, pages = f"{base}?sort=-weather.temperature&limit=100", 0
        while url and pages < 20:
            url, pages = client.get(url).json()["next"], pages + 1
        return pages

    walk_s, pages = timed(walk)
    with connection.cursor() as cur:
        cur.execute("SET enable_seqscan = off")  # ask whether the index can serve eq at all
        cur.execute(
            "EXPLAIN SELECT id FROM curation_sample WHERE dataset_id = %s AND metadata @> %s::jsonb",
            [dataset.id, '{"weather": {"scenario": "hail"}}'],
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute("SET enable_seqscan = on")
    uses_gin = "curation_sample_metadata_gin" in plan
    lines += [
        "",
        f"Sorted by `-weather.temperature` (fallback applied, keyset cursor on value and idx): {pages} pages of "
        f"100 through `next` links in **{walk_s * 1000:.0f} ms** ({walk_s * 1000 / pages:.0f} ms a page).",
        "",
        f"`eq` is `metadata @> ...`; the GIN (jsonb_path_ops) index serves it: **{'yes' if uses_gin else 'no'}**.",
    ]
    body = "## Metadata filters over 100,000 samples (`bench_filters.py`)\n\n" + "\n".join(lines)
    print(body)
    write_section("bench_filters", body)
    Dataset.objects.filter(pk=dataset.pk).delete()


if __name__ == "__main__":
    main()
