"""Lightly's prediction format (winnow.client.predictions): every rule, and each score against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from winnow.client import predictions as fmt

CATS = [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 7, "name": "bird"}]


def schema(task_type="classification", **extra):
    return fmt.parse_schema({"task_type": task_type, "categories": CATS, **extra}, "t")


def test_schema_sorts_categories_by_id_and_accepts_type_or_task_type():
    s = schema()
    assert [c["name"] for c in s.categories] == ["cat", "dog", "bird"]
    assert s.index == {1: 0, 3: 1, 7: 2}
    assert fmt.parse_schema({"type": "object-detection", "categories": CATS, "name": "det"}).name == "det"


@pytest.mark.parametrize(
    "obj, name, needle",
    [
        ([], "t", "schema: must be an object"),
        ({"task_type": "classification", "categories": CATS}, "a b", "schema.name"),
        ({"task_type": "segmentation", "categories": CATS}, "t", "schema.task_type"),
        ({"task_type": "classification", "categories": []}, "t", "schema.categories"),
        ({"task_type": "classification", "categories": [{"id": -1, "name": "x"}]}, "t", "categories[0].id"),
        ({"task_type": "classification", "categories": [{"id": 1, "name": ""}]}, "t", "categories[0].name"),
        (
            {"task_type": "classification", "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]},
            "t",
            "[1].id",
        ),
        (
            {"task_type": "classification", "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]},
            "t",
            "[1].name",
        ),
        ({"task_type": "classification", "categories": CATS, "is_labels": "yes"}, "t", "is_labels"),
    ],
)
def test_bad_schemas(obj, name, needle):
    with pytest.raises(fmt.PredictionError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        fmt.parse_schema(obj, name)


def rec(*preds, name="a.jpg"):
    return {"file_name": name, "predictions": list(preds)}


@pytest.mark.parametrize(
    "record, needle",
    [
        ("x", "f1: must be an object"),
        ({"predictions": []}, "f1.file_name"),
        (rec(), "exactly one singleton, got 0"),
        (rec({"category_id": 1, "score": 0.5}, {"category_id": 3, "score": 0.5}), "exactly one singleton, got 2"),
        (rec({"category_id": 2, "score": 0.5}), "category_id: 2 is not a category"),
        (rec({"category_id": True, "score": 0.5}), "category_id"),
        (rec({"category_id": 1, "score": -0.1}), "score: must be a number between 0 and 1"),
        (rec({"category_id": 1, "score": "0.5"}), "score"),
        (rec({"category_id": 1, "score": 0.5, "probabilities": [0.5, 0.5]}), "must list 3 numbers"),
        (rec({"category_id": 1, "score": 0.5, "probabilities": [0.5, 0.3, 0.1]}), "sum to 0.9"),
        (rec({"category_id": 1, "score": 0.5, "probabilities": [1.5, -0.5, 0]}), "between 0 and 1"),
        (rec({"category_id": 1, "score": 0.5, "probabilities": [0.5, 0.5, float("nan")]}), "between 0 and 1"),
        ({"file_name": "a.jpg", "predictions": {}}, "predictions: must be a list"),
    ],
)
def test_bad_classification_records_name_file_and_field(record, needle):
    builder = fmt.Builder(schema())
    with pytest.raises(fmt.PredictionError) as info:
        builder.add(record, "f1")
    assert needle in str(info.value)
    if isinstance(record, dict) and record.get("file_name"):
        assert "a.jpg" in str(info.value)


def test_probabilities_within_the_tolerance_are_accepted_and_a_file_only_once():
    builder = fmt.Builder(schema())
    builder.add(rec({"category_id": 1, "score": 0.5, "probabilities": [0.5, 0.3, 0.195]}), "f1")
    with pytest.raises(fmt.PredictionError, match="earlier in the upload"):
        builder.add(rec({"category_id": 1, "score": 0.5}), "f2")


@pytest.mark.parametrize(
    "pred, needle",
    [
        ({"category_id": 1, "score": 0.5}, "bbox: must be [x, y, w, h]"),
        ({"category_id": 1, "score": 0.5, "bbox": [1, 2, 3]}, "bbox: must be"),
        ({"category_id": 1, "score": 0.5, "bbox": [1, 2, 3, "4"]}, "bbox: must be"),
        ({"category_id": 1, "score": 0.5, "bbox": [-5, 2, 3, 4]}, "outside the image"),
        ({"category_id": 1, "score": 0.5, "bbox": [5, 2, -3, 4]}, "outside the image"),
    ],
)
def test_bad_boxes(pred, needle):
    with pytest.raises(fmt.PredictionError) as info:
        fmt.Builder(schema("object-detection")).add(rec(pred), "f1")
    assert needle in str(info.value) and "a.jpg" in str(info.value)


def detection_columns():
    b = fmt.Builder(schema("object-detection"))
    b.add(rec({"category_id": 3, "score": 0.9, "bbox": [0, 0, 10, 10]}, {"category_id": 7, "score": 0.5, "bbox": [5, 5, 5, 5]}, name="a.jpg"), "a")  # fmt: skip
    b.add(rec(name="b.jpg"), "b")
    b.add(rec({"category_id": 1, "score": 0.3, "bbox": [90, 0, 20, 10]}, name="c.jpg"), "c")
    return b.finish()


def test_boxes_outside_an_image_of_known_size():
    cols = detection_columns()
    assert cols.arrays["offsets"].tolist() == [0, 2, 2, 3]
    fmt.check_boxes(cols, np.array([100, 100, 0]), np.array([100, 100, 0]))  # c's size unknown: not checked
    fmt.check_boxes(cols, np.array([100, 100, 110]), np.array([100, 100, 10]))  # 90 + 20 = 110 fits exactly
    with pytest.raises(
        fmt.PredictionError, match=r"c\.jpg\.predictions\[0\]\.bbox: \[90.0, 0.0, 20.0, 10.0\] is outside"
    ):
        fmt.check_boxes(cols, np.array([100, 100, 100]), np.array([100, 100, 100]))


def test_classification_scores_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [np.nan] * 3])
    s = fmt.classification_scores(p, np.array([0.7, 1 / 3, 1.0, 0.8]))
    # least confidence (1 - max) / (1 - 1/3): 0.3 / (2/3) = 0.45; uniform 1; sure 0; no probabilities: from score.
    assert s["uncertainty_least_confidence"] == pytest.approx([0.45, 1.0, 0.0, 0.3])
    assert s["uncertainty_margin"][:3] == pytest.approx([0.5, 1.0, 0.0])
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert s["uncertainty_entropy"][:3] == pytest.approx([h, 1.0, 0.0])
    assert math.isnan(s["uncertainty_entropy"][3]) and math.isnan(s["uncertainty_margin"][3])


def test_detection_scores_and_predicted_class_by_hand():
    cols = detection_columns()
    s = fmt.scores(cols)
    assert s["object_count"].tolist() == [2, 0, 1]
    assert s["mean_confidence"][[0, 2]] == pytest.approx([0.7, 0.3])
    assert s["min_confidence"][[0, 2]] == pytest.approx([0.5, 0.3])
    assert math.isnan(s["mean_confidence"][1])
    assert s["objectness_least_confidence"] == pytest.approx([0.1, 1.0, 0.7])
    # positions in the sorted categories (cat=0, dog=1, bird=2): a's best is dog, b has none, c cat.
    assert fmt.predicted_class(cols).tolist() == [1, -1, 0]


def test_labels_tasks_carry_no_uncertainty():
    b = fmt.Builder(schema(is_labels=True))
    b.add(rec({"category_id": 1, "score": 1}), "f")
    assert fmt.scores(b.finish()) == {}


def test_stream_with_header_and_document_agree():
    header = {"schema": {"task_type": "classification", "categories": CATS}, "is_labels": False}
    lines = [
        json.dumps(header),
        "",
        json.dumps(rec({"category_id": 7, "score": 0.6, "probabilities": [0.2, 0.2, 0.6]})),
    ]
    a = fmt.parse_stream([line.encode() for line in lines], task="t")
    b = fmt.parse_document({**header, "predictions": [json.loads(lines[2])]}, task="t")
    assert a.file_names == b.file_names == ["a.jpg"]
    assert np.array_equal(a.arrays["probabilities"], b.arrays["probabilities"])
    assert a.arrays["category"].tolist() == [2]
    with pytest.raises(fmt.PredictionError, match="line 1: the first line must be"):
        fmt.parse_stream([lines[2]])
    with pytest.raises(fmt.PredictionError, match="line 2: not valid JSON"):
        fmt.parse_stream([lines[0], '{"file_name": NaN}'], task="t")


def test_records_from_arrays_and_lightly_folder(tmp_path):
    recs = list(fmt.records_from_arrays(["x.jpg"], np.array([[0.1, 0.9]])))
    assert recs == [
        {"file_name": "x.jpg", "predictions": [{"category_id": 1, "score": 0.9, "probabilities": [0.1, 0.9]}]}
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "sub" / "x.json").write_text(json.dumps(recs[0]))
    assert list(fmt.iter_prediction_files(tmp_path)) == [("sub/x.json", recs[0])]
