"""Analytics, sorting, the map, exports and dataset counts at scale, timed through HTTP.

Each function takes (base_url, token, dataset_id, ...) of a running server (gunicorn on PostgreSQL) and
returns a dict of numbers; `sql_references` times the same aggregates as raw SQL over a DSN, as a
same-run floor. No Django import: bench_scale.py calls these against whatever server it started.

    .venv/bin/python benchmarks/scale_analytics.py --base http://127.0.0.1:8125 --token wnw_... \\
        --dataset <id> --tag <100k tag id> --dsn "dbname=... host=127.0.0.1 user=postgres"
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import time
import urllib.parse
import urllib.request

import numpy as np


def _request(base_url: str, token: str, path: str, params: dict | None = None, body=None, method: str = "GET"):
    url = base_url.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", "Accept": "*/*"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.status, response.headers, response.read()


def _timed(fn, repeat: int = 1) -> tuple[float, object]:
    """The best of `repeat` wall times (the first one warms the server's caches as a user's would)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def histograms(base_url, token, dataset_id, filter_obj=None, repeat: int = 2) -> dict:
    params = {"filter": json.dumps(filter_obj)} if filter_obj else None
    seconds, (_s, _h, raw) = _timed(
        lambda: _request(base_url, token, f"/api/v1/datasets/{dataset_id}/metadata/histograms", params), repeat
    )
    body = json.loads(raw)
    return {"seconds": seconds, "fields": len(body["fields"]), "total": body["total"], "matched": body["matched"]}


def sorted_pages(base_url, token, dataset_id, sort: str, pages: int = 3, limit: int = 50) -> dict:
    """The first page sorted by `sort`, then `pages - 1` pages through the `next` links."""
    times, link = [], None
    params = {"sort": sort, "limit": limit}
    for _ in range(pages):
        if link is None:
            seconds, (_s, _h, raw) = _timed(
                lambda: _request(base_url, token, f"/api/v1/datasets/{dataset_id}/samples", params)
            )
        else:
            path = urllib.parse.urlsplit(link)
            seconds, (_s, _h, raw) = _timed(lambda: _request(base_url, token, path.path + "?" + path.query))
        times.append(seconds)
        link = json.loads(raw)["next"]
        if not link:
            break
    return {"first_page_s": times[0], "next_page_s_max": max(times[1:], default=0.0), "pages": len(times)}


def filtered_count(base_url, token, dataset_id, where: list[str], repeat: int = 2) -> dict:
    params = [("where", w) for w in where] + [("count", "true"), ("limit", "50")]
    url_params = urllib.parse.urlencode(params)
    seconds, (_s, _h, raw) = _timed(
        lambda: _request(base_url, token, f"/api/v1/datasets/{dataset_id}/samples?{url_params}"), repeat
    )
    return {"seconds": seconds, "count": json.loads(raw)["count"]}


def decode_column(raw: bytes) -> tuple[dict, np.ndarray]:
    """The binary colour column: uint32 LE legend length, JSON legend, little-endian data."""
    (length,) = struct.unpack("<I", raw[:4])
    legend = json.loads(raw[4 : 4 + length])
    dtype = {"float32": "<f4", "int16": "<i2"}[legend["dtype"]]
    return legend, np.frombuffer(raw[4 + length :], dtype=dtype)


def colour_column(base_url, token, dataset_id, *, path=None, tag=None, encoding="binary", repeat: int = 2) -> dict:
    params = {"encoding": encoding, **({"path": path} if path else {"tag": tag})}
    seconds, (_s, headers, raw) = _timed(
        lambda: _request(base_url, token, f"/api/v1/datasets/{dataset_id}/metadata/column", params), repeat
    )
    size = decode_column(raw)[0]["size"] if encoding == "binary" else json.loads(raw)["size"]
    return {"seconds": seconds, "bytes": len(raw), "size": size}


def lasso_save(base_url, token, dataset_id, n_samples: int, n_selected: int, name: str) -> dict:
    """The map's lasso: the grid's first 60 (by mask), then the whole selection saved as a tag (by mask)."""
    bits = np.zeros(n_samples, dtype=bool)
    bits[np.random.default_rng(0).choice(n_samples, n_selected, replace=False)] = True
    mask = base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()
    grid_s, (_s, _h, raw) = _timed(
        lambda: _request(
            base_url,
            token,
            f"/api/v1/datasets/{dataset_id}/map/samples",
            body={"mask": mask, "limit": 60},
            method="POST",
        )
    )
    save_s, (_s, _h, raw) = _timed(
        lambda: _request(
            base_url, token, f"/api/v1/datasets/{dataset_id}/tags", body={"name": name, "bitmask": mask}, method="POST"
        )
    )
    return {"grid_s": grid_s, "save_s": save_s, "count": json.loads(raw)["count"]}


def export(base_url, token, dataset_id, tag_id, fmt: str = "csv") -> dict:
    url = f"{base_url.rstrip('/')}/api/v1/datasets/{dataset_id}/tags/{tag_id}/export?" + urllib.parse.urlencode(
        {"format": fmt}
    )
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    start = time.perf_counter()
    size = lines = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        while chunk := response.read(1 << 20):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return {"seconds": time.perf_counter() - start, "bytes": size, "lines": lines}


def dataset_list_detail(base_url, token, dataset_id, repeat: int = 3) -> dict:
    list_s, _ = _timed(lambda: _request(base_url, token, "/api/v1/datasets"), repeat)
    detail_s, (_s, _h, raw) = _timed(lambda: _request(base_url, token, f"/api/v1/datasets/{dataset_id}"), repeat)
    return {"list_s": list_s, "detail_s": detail_s, "sample_count": json.loads(raw)["sample_count"]}


def sql_references(dsn: str, dataset_id: str) -> dict:
    """Same-run floors in raw SQL: a COUNT, one GROUP BY over a category, MIN/MAX of a number."""
    import psycopg2

    out = {}
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        for name, sql in [
            ("count_s", "SELECT count(*) FROM curation_sample WHERE dataset_id = %s"),
            (
                "group_by_category_s",
                "SELECT metadata #> '{weather,scenario}', count(*) FROM curation_sample "
                "WHERE dataset_id = %s GROUP BY 1",
            ),
            (
                "min_max_number_s",
                "SELECT min((metadata #>> '{weather,temperature}')::float8), "
                "max((metadata #>> '{weather,temperature}')::float8) FROM curation_sample WHERE dataset_id = %s",
            ),
        ]:
            out[name], _ = _timed(lambda: (cursor.execute(sql, [dataset_id]), cursor.fetchall()), 2)
    return out


def run_all(base_url, token, dataset_id, tag_id, n_samples: int, dsn: str | None = None) -> dict:
    results = {
        "histograms": histograms(base_url, token, dataset_id),
        "histograms_filtered": histograms(
            base_url,
            token,
            dataset_id,
            {
                "conditions": [
                    {"path": "weather.scenario", "op": "eq", "value": "rainy"},
                    {"path": "weather.temperature", "op": "gt", "value": 15},
                ]
            },
        ),
        "sorted_temperature": sorted_pages(base_url, token, dataset_id, "weather.temperature"),
        "sorted_temperature_desc": sorted_pages(base_url, token, dataset_id, "-weather.temperature"),
        "sorted_camera": sorted_pages(base_url, token, dataset_id, "camera.id"),
        "filtered_count": filtered_count(base_url, token, dataset_id, ["weather.scenario:eq:rainy", "camera.id:lt:10"]),
        "column_numeric": colour_column(base_url, token, dataset_id, path="weather.temperature"),
        "column_category": colour_column(base_url, token, dataset_id, path="weather.scenario"),
        "column_tag": colour_column(base_url, token, dataset_id, tag=tag_id),
        "lasso_save_300k": lasso_save(
            base_url, token, dataset_id, n_samples, min(300_000, n_samples), f"lasso-{int(time.time())}"
        ),
        "export_csv": export(base_url, token, dataset_id, tag_id, "csv"),
        "export_json": export(base_url, token, dataset_id, tag_id, "json"),
        "datasets": dataset_list_detail(base_url, token, dataset_id),
    }
    if dsn:
        results["sql_reference"] = sql_references(dsn, dataset_id)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    print(json.dumps(run_all(args.base, args.token, args.dataset, args.tag, args.n, args.dsn), indent=1))
