"""More like this and duplicates through the Python client and the `winnow` CLI, against a live server."""

from __future__ import annotations

import shutil

import pytest

from tests.client.test_client_cli import client, live, photos, token, winnow  # noqa: F401  (fixtures)
from winnow.client import WinnowError


@live
def test_similar_and_duplicates_through_client_and_cli(live_server, token, client, photos):
    folder, _metadata, names = photos
    shutil.copy(folder / "img_1.jpg", folder / "img_1_copy.jpg")  # the same bytes under another name
    dataset_id = client.create_dataset("similar", upload_mode="full")
    client.upload_dataset(folder, progress=False)
    client.wait_for_embedding("default", timeout=120)
    samples = {s["file_name"]: s["id"] for s in client.list_samples()}

    run = client.find_similar(samples["img_1.jpg"], k=3, progress=False)
    rows = list(client.similar_results(run["id"]))
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["file_name"] == "img_1_copy.jpg" and rows[0]["distance"] < 1e-3
    assert "img_1.jpg" not in [r["file_name"] for r in rows]  # the query is left out

    run = client.find_similar(image=folder / "img_2.jpg", k=1, progress=False)  # embedded on the server
    assert next(client.similar_results(run["id"]))["file_name"] == "img_2.jpg"

    run = client.find_similar(samples=[samples["img_1.jpg"], samples["img_2.jpg"]], mode="each", k=1, progress=False)
    assert run["params"]["query"]["kind"] == "samples"  # an unsaved selection; the copy of img_1 is nearest
    assert next(client.similar_results(run["id"]))["file_name"] == "img_1_copy.jpg"

    with pytest.raises(WinnowError, match="sample"):
        client.find_similar("0" * 24, progress=False)

    result = winnow(
        live_server,
        token,
        "similar",
        "--dataset-id",
        dataset_id,
        "--sample",
        samples["img_4.jpg"],
        "--k",
        "2",
        "--quiet",
        "--save-tag",
        "like-4",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("1\t")
    assert client.get_tag("like-4")["count"] == 2

    result = winnow(live_server, token, "duplicates", "--dataset-id", dataset_id, "--quiet", "--save-tag", "dedup")
    assert result.returncode == 0, result.stderr
    assert "exact" in result.stdout and "img_1.jpg, img_1_copy.jpg" in result.stdout
    kept = set(client.export_tag("dedup"))
    assert "img_1.jpg" in kept and "img_1_copy.jpg" not in kept

    result = winnow(live_server, token, "duplicates", "--dataset-id", dataset_id, "--threshold", "-1")
    assert result.returncode == 1 and "--threshold" in result.stderr
