"""Selection with predictions: uncertainty, CORAL-style and class balance on the predicted class, over the API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.api.test_sampling_runs import add_embedding, add_samples, add_tag, all_scores, blobs, post_and_run, runs_url

pytestmark = pytest.mark.django_db

N = 60
CATS = [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}]


def probabilities(n: int = N) -> np.ndarray:
    """Sample i is predicted class i % 3 with confidence falling in i: the least confident samples are the last."""
    rng = np.random.default_rng(1)
    top = np.linspace(0.95, 0.4, n)
    p = np.zeros((n, 3))
    for i in range(n):
        rest = (1 - top[i]) * rng.dirichlet([1, 1])
        others = [c for c in range(3) if c != i % 3]
        p[i, i % 3], p[i, others[0]], p[i, others[1]] = top[i], rest[0], rest[1]
    return np.round(p, 4) / np.round(p, 4).sum(axis=1, keepdims=True)


@pytest.fixture
def data(dataset, editor_api):
    add_samples(dataset, N)
    emb = add_embedding(dataset, blobs(N))
    p = probabilities()
    records = [
        {"file_name": f"img_{i:03d}.jpg", "predictions": [{"category_id": int(p[i].argmax()), "score": float(p[i].max()),
                                                           "probabilities": p[i].tolist()}]}
        for i in range(N)
    ]  # fmt: skip
    doc = {"schema": {"task_type": "classification", "categories": CATS}, "predictions": records}
    response = editor_api.put(
        f"/api/v1/datasets/{dataset.id}/predictions/clf", json.dumps(doc), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return {
        "p": p,
        "embedding": emb,
        "input": add_tag(dataset, "first-50", range(50)),
        "labeled": add_tag(dataset, "labeled", [49, 48, 0]),
    }


def run(api, ds, capture, **body):
    body = {"name": "r", **body}
    response = post_and_run(api, ds, body, capture)
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    state = api.get(f"{runs_url(ds)}/{run_id}").json()
    assert state["status"] == "succeeded", state
    return [row["idx"] for row in all_scores(api, ds, run_id, limit=100)]


def least_confidence(p):
    return (1 - p.max(axis=1)) / (1 - 1 / 3)


def test_uncertainty_takes_the_least_confident_first_within_the_input_tag_minus_the_labeled(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    order = run(
        editor_api, dataset, django_capture_on_commit_callbacks, strategy="uncertainty", task="clf",
        input_tag=data["input"].id, preselected_tag=data["labeled"].id,
    )  # fmt: skip
    expected = [i for i in np.argsort(-np.round(least_confidence(data["p"]), 6), kind="stable") if i < 50]
    expected = [int(i) for i in expected if i not in (49, 48, 0)]
    assert order == expected
    assert order[:3] == [47, 46, 45]


def test_any_score_works_as_the_uncertainty(editor_api, dataset, data, django_capture_on_commit_callbacks):
    order = run(
        editor_api, dataset, django_capture_on_commit_callbacks, strategy="uncertainty",
        field="predictions.clf.uncertainty_margin", n_samples=5,
    )  # fmt: skip
    p = np.sort(data["p"], axis=1)
    margin = np.round(1 - (p[:, -1] - p[:, -2]), 6)
    assert order[:5] == [int(i) for i in np.argsort(-margin, kind="stable")[:5]]


def test_coral_trades_uncertainty_for_diversity(editor_api, dataset, data, django_capture_on_commit_callbacks):
    w = 0.7
    order = run(
        editor_api, dataset, django_capture_on_commit_callbacks, embedding=data["embedding"].id,
        strategies=[{"strategy": "coral", "task": "clf", "weight": w}], n_samples=10,
        preselected_tag=data["labeled"].id,
    )  # fmt: skip
    # The greedy pick by hand: maximise (u / max u) ** w * distance to the selected set ** (1 - w).
    X = blobs(N).astype(np.float64)
    u = np.round(least_confidence(data["p"]), 6)
    u = u / u.max()
    selected = [49, 48, 0]
    d = np.min(np.linalg.norm(X[:, None] - X[selected][None], axis=2), axis=1)
    alive = np.ones(N, bool)
    alive[selected] = False
    picks = []
    for _ in range(10):
        value = np.where(alive, u**w * d ** (1 - w), -1)
        j = int(np.argmax(value))
        picks.append(j)
        alive[j] = False
        d = np.minimum(d, np.linalg.norm(X - X[j], axis=1))
    assert order[:10] == picks
    # Not the same as uncertainty alone: diversity moved picks.
    assert order[:10] != [int(i) for i in np.argsort(-u, kind="stable") if i not in selected][:10]


def test_class_balance_on_the_predicted_class_with_uncertainty(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    order = run(
        editor_api, dataset, django_capture_on_commit_callbacks, n_samples=12,
        strategies=[{"strategy": "balance", "task": "clf", "target": "uniform"}, {"strategy": "uncertainty", "task": "clf"}],
        preselected_tag=data["labeled"].id,
    )  # fmt: skip
    predicted = data["p"].argmax(axis=1)
    classes = [int(predicted[i]) for i in order[:12] + [49, 48, 0]]
    assert classes.count(0) == classes.count(1) == classes.count(2) == 5
    # Within a class, the least confident first.
    u = least_confidence(data["p"])
    for c in range(3):
        within = [u[i] for i in order[:12] if predicted[i] == c]
        assert within == sorted(within, reverse=True)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"strategy": "uncertainty", "task": "nope"}, "task"),
        ({"strategy": "uncertainty", "task": "clf", "field": "x"}, "task"),
        ({"strategy": "balance", "task": "clf", "score": "confidence", "target": "uniform"}, "score"),
        ({"strategies": [{"strategy": "coral", "task": "clf", "weight": 1.5}], "n_samples": 3}, "strategies[0].weight"),
        ({"strategies": [{"strategy": "coral", "task": "clf"}, {"strategy": "coreset"}], "n_samples": 3}, "strategies"),
        ({"strategy": "random", "task": "clf"}, "task"),
    ],
)
def test_bad_prediction_strategies_name_the_field(editor_api, dataset, data, body, field):
    body = {"name": "bad", "embedding": data["embedding"].id, **body}
    response = editor_api.post(runs_url(dataset), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
