"""Strategies over model predictions, expressed through the weights and coreset objectives of `select`.

- uncertainty: a score computed from predictions (e.g. `predictions.<task>.uncertainty_entropy`) as weights,
  highest first: Lightly's ACTIVE_LEARNING selection.
- coral: uncertainty and coreset diversity together (Lightly's CORAL): each pick maximises
  uncertainty ** weight * distance-to-the-selected-set ** (1 - weight); weight 1 would be uncertainty alone,
  0 coreset alone.
Class balance on the predicted class is `balance` over `predictions.<task>.predicted_class`.
"""

from __future__ import annotations

from winnow.values import is_finite_number

from .base import SamplerError

STRATEGIES: dict[str, dict] = {
    "uncertainty": {"required": ("field",), "optional": ("strength",), "embeddings": False},
    "coral": {"required": ("field",), "optional": ("weight",), "embeddings": True},
}
# Measured in benchmarks/bench_active_learning.py (Fashion-MNIST, 3 seeds): 0.5 and 0.7 reach random's
# 1,000-label accuracy with 1,000 labels, 0.3 with 1,100; 0.5 is ahead at 300-500 labels and at the end.
DEFAULT_WEIGHT = 0.5


def coral_weight(value, field: str) -> float:
    if value is None:
        return DEFAULT_WEIGHT
    if not is_finite_number(value) or not 0 < value < 1:
        raise SamplerError("must be a number between 0 and 1 (both excluded)", field)
    return float(value)


def expand(spec: dict, where: str) -> list[dict]:
    """The weights / coreset specs a prediction strategy stands for (each keeps `where` for messages)."""
    if spec["strategy"] == "uncertainty":
        return [dict(spec, strategy="weights", where=where)]
    w = coral_weight(spec.get("weight"), f"{where}.weight")
    return [
        {"strategy": "weights", "field": spec["field"], "strength": w, "where": where},
        {"strategy": "coreset", "strength": 1.0 - w, "where": where},
    ]
