"""Predictions through the Python client and the `winnow` CLI, against a live server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.models import Sample
from tests.client.test_client_cli import live, winnow
from winnow.accounts.models import ApiToken
from winnow.client import Client, WinnowError

CATS = [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]


@pytest.fixture
def token(owner) -> str:
    return ApiToken.issue(owner, "cli")[1]


@pytest.fixture
def client(live_server, token):
    with Client(token=token, server=live_server.url) as client:
        client.create_dataset("preds", "meta")
        client.register_samples({"file_name": f"cam/{i}.jpg", "width": 100, "height": 80} for i in range(6))
        yield client


def scores_of(client):
    return {s["file_name"]: s["metadata"].get("predictions", {}) for s in client.list_samples()}


@live
def test_upload_predictions_from_numpy_then_select_by_uncertainty(client):
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]])
    names = [f"cam/{i}.jpg" for i in range(6)]
    upload = client.upload_predictions(
        "clf", {"task_type": "classification", "categories": CATS}, p, file_names=names, progress=False
    )
    assert upload["status"] == "succeeded" and upload["result"]["samples"] == 6
    assert scores_of(client)["cam/2.jpg"]["clf"]["uncertainty_least_confidence"] == pytest.approx(1.0)
    assert [t["name"] for t in client.list_prediction_tasks()] == ["clf"]

    run = client.create_sampling_run("al", None, "uncertainty", n_samples=3, task="clf")
    client.wait_for_run(run["id"], progress=False)
    assert [s["file_name"] for s in client.get_scores(run["id"])][:3] == ["cam/2.jpg", "cam/4.jpg", "cam/1.jpg"]


@live
def test_a_refused_record_is_named_before_anything_is_sent(client):
    bad = [{"file_name": "cam/0.jpg", "predictions": [{"category_id": 0, "score": 0.6, "probabilities": [0.6, 0.6]}]}]
    with pytest.raises(WinnowError, match=r"cam/0\.jpg.*probabilities: sum to 1\.2"):
        client.upload_predictions("clf", {"task_type": "classification", "categories": CATS}, bad, progress=False)
    assert client.list_prediction_tasks() == []
    # The server's own check (a name the client cannot know) also names the file.
    unknown = [{"file_name": "cam/9.jpg", "predictions": [{"category_id": 0, "score": 0.6}]}]
    with pytest.raises(WinnowError, match=r"cam/9\.jpg"):
        client.upload_predictions("clf", {"task_type": "classification", "categories": CATS}, unknown, progress=False)


@live
def test_cli_reads_lightlys_prediction_folder(live_server, token, client, tmp_path):
    root = tmp_path / ".lightly" / "predictions" / "det"
    (root / "cam").mkdir(parents=True)
    (root / "schema.json").write_text(json.dumps({"task_type": "object-detection", "categories": CATS}))
    for i in range(3):
        boxes = [{"category_id": 1, "score": 0.5 + 0.1 * i, "bbox": [10, 10, 20, 20]}] * i
        (root / "cam" / f"{i}.json").write_text(json.dumps({"file_name": f"cam/{i}.jpg", "predictions": boxes}))
    result = winnow(
        live_server, token, "predictions", "--dataset-id", client.dataset_id, "--task", "det",
        "--input-dir", str(tmp_path / ".lightly" / "predictions"), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 samples" in result.stdout
    scores = scores_of(client)
    assert scores["cam/2.jpg"]["det"]["object_count"] == 2
    assert scores["cam/0.jpg"]["det"]["objectness_least_confidence"] == 1.0

    result = winnow(
        live_server, token, "select", "--dataset-id", client.dataset_id, "--name", "busy-ones",
        "--strategy", "uncertainty", "--task", "det", "--score", "object_count", "--n-samples", "1", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert client.export_tag("busy-ones", "filenames", raw=True).split() == ["cam/2.jpg"]

    # A box outside its 100 x 80 image: refused, naming file and field; the task stays as it was.
    (root / "cam" / "1.json").write_text(
        json.dumps(
            {"file_name": "cam/1.jpg", "predictions": [{"category_id": 0, "score": 0.5, "bbox": [90, 0, 20, 5]}]}
        )
    )
    result = winnow(
        live_server, token, "predictions", "--dataset-id", client.dataset_id, "--task", "det",
        "--input-dir", str(root), "--quiet",
    )  # fmt: skip
    assert result.returncode == 1
    assert "cam/1.jpg.predictions[0].bbox" in result.stderr
    assert Sample.objects.get(file_name="cam/1.jpg").metadata["predictions"]["det"]["object_count"] == 1
