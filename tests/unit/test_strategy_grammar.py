"""The strategy grammar (sampling/samplers/strategies.py) is the one parser of a selection request: the API's
request check and `select()` refuse the same things with the same field and message, without a database."""

from __future__ import annotations

import numpy as np
import pytest

from sampling import services
from sampling.samplers import SamplerError, SelectionInput, select
from sampling.samplers.strategies import check_request, check_strategies

BAD_LISTS = {
    "unknown strategy": ([{"strategy": "magic"}], "strategies[0].strategy", "unknown strategy 'magic'"),
    "not an object": (["coreset"], "strategies[0]", "must be an object"),
    "unknown parameter": ([{"strategy": "coreset", "radius": 3}], "strategies[0].radius", "not a parameter"),
    "missing field": ([{"strategy": "weights"}], "strategies[0].field", "required by the weights strategy"),
    "zero strength": ([{"strategy": "random", "strength": 0}], "strategies[0].strength", "greater than 0"),
    "bad metric": ([{"strategy": "similarity", "metric": "l1"}], "strategies[0].metric", "must be one of"),
    "coral weight": ([{"strategy": "coral", "field": "s", "weight": 1}], "strategies[0].weight", "between 0 and 1"),
    "threshold op": (
        [{"strategy": "threshold", "field": "s", "operation": "~", "value": 1}],
        "strategies[0].operation",
        "must be one of",
    ),
    "threshold text for gt": (
        [{"strategy": "threshold", "field": "s", "operation": "gt", "value": "x"}],
        "strategies[0].value",
        "finite number",
    ),
    "balance target": (
        [{"strategy": "balance", "field": "s", "target": {"a": 0}}],
        "strategies[0].target",
        "not all zero",
    ),
    "two distances": ([{"strategy": "coreset"}, {"strategy": "coral", "field": "s"}], "strategies", "at most one"),
    "auto and random": ([{"strategy": "auto"}, {"strategy": "random"}], "strategies", "auto is a combination"),
    "task for coreset": ([{"strategy": "coreset", "task": "t"}], "strategies[0].task", "does not use a task"),
    "task and field": ([{"strategy": "weights", "task": "t", "field": "s"}], "strategies[0].task", "not both"),
    "score for balance": (
        [{"strategy": "balance", "task": "t", "score": "margin", "target": "uniform"}],
        "strategies[0].score",
        "predicted class",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LISTS))
def test_request_check_and_select_refuse_alike(case):
    strategies, field, text = BAD_LISTS[case]
    with pytest.raises(services.InvalidRun) as request_error:
        services.check_request({"name": "r", "strategies": strategies, "n_samples": 2})
    assert request_error.value.field == field and text in request_error.value.message
    if any("task" in s for s in strategies if isinstance(s, dict)):
        return  # a task is resolved to its field by the service: select() never sees one
    inp = SelectionInput(embeddings=np.eye(4, dtype=np.float32), candidates=np.arange(4), preselected=np.zeros(0, int))
    with pytest.raises(SamplerError) as select_error:
        select(inp, strategies, n_samples=2)
    assert (select_error.value.field, select_error.value.message) == (field, request_error.value.message)


def test_a_single_strategy_names_its_parameters_without_a_prefix():
    with pytest.raises(SamplerError) as caught:
        check_request({"strategy": "random", "strength": -1})
    assert caught.value.field == "strength"
    with pytest.raises(SamplerError) as caught:
        check_request({"strategies": [{"strategy": "random"}], "metric": "cosine"})
    assert caught.value.field == "metric" and "inside each strategy object" in caught.value.message


@pytest.mark.parametrize(
    ("request_", "field", "text"),
    [
        ({"strategy": "coreset"}, "n_samples", "required by the coreset strategy"),
        ({"strategy": "diversity"}, "min_distance", "required by the diversity strategy"),
        ({"strategy": "diversity", "min_distance": float("nan")}, "min_distance", "greater than 0"),
        ({"strategy": "random", "min_distance": 1.0}, "min_distance", "only the diversity strategy"),
        ({}, "strategy", "required"),
        ({"strategy": "random", "strategies": [{"strategy": "random"}]}, "strategies", "not both"),
    ],
)
def test_stopping_rules_and_request_shape(request_, field, text):
    with pytest.raises(SamplerError) as caught:
        check_request(request_)
    assert caught.value.field == field and text in caught.value.message


def test_select_applies_the_stopping_rules_to_direct_callers():
    inp = SelectionInput(embeddings=np.eye(4, dtype=np.float32), candidates=np.arange(4), preselected=np.zeros(0, int))
    with pytest.raises(SamplerError, match="min_distance: only the diversity strategy"):
        select(inp, [{"strategy": "coreset"}], n_samples=2, min_distance=0.5)
    with pytest.raises(SamplerError, match="n_samples: required by the typicality strategy"):
        select(inp, [{"strategy": "typicality"}], n_samples=None)


def test_a_checked_request_moves_top_level_parameters_into_its_strategy():
    checked = services.check_request({"name": "r", "strategy": "weights", "field": "car.speed", "strength": 2})
    assert checked["strategies"] == [{"strategy": "weights", "field": "car.speed", "strength": 2}]
    assert "strategy" not in checked and "field" not in checked and checked["name"] == "r"
    assert check_strategies([{"strategy": "uncertainty", "task": "cls"}]) == [
        {"strategy": "uncertainty", "task": "cls"}
    ]
