"""The strategy grammar: which strategies exist, their parameters, what each parameter may hold, how strategies
combine and when a selection stops. Pure (no Django), and the one parser of it:

- a sampling-run request passes through `check_request` once, at the edge (the API's
  `SamplingRunCreateSerializer`, or `sampling.services.create_run` for callers in Python such as the
  `/v1/` adapter); `sampling.services.prepare_run` then checks only what needs the dataset (tasks, fields,
  tags, the embedding, how many candidates there are);
- `select()` runs `check_strategies` and `check_stops` on what it is given, so a caller that goes around the
  API (benchmarks, notebooks) gets the same rules and messages; for a queued run that is the request already
  checked, read back.

Errors are SamplerError with `field` naming the request key at fault (`strength`, `strategies[1].field`).
What `select` still checks itself is about the data it receives, not the request: indices in range, finite
embeddings, metadata columns, and `n_samples` against the candidates it actually got (through the API
`prepare_run` refused that already; `select` keeps it as a guard for direct callers).
"""

from __future__ import annotations

from winnow.values import is_finite_number

from . import predictions as pred
from .base import SamplerError
from .metadata import OPERATIONS
from .similarity import METRICS

STRATEGIES: dict[str, dict] = {
    "auto": {"required": (), "optional": (), "embeddings": True},
    "random": {"required": (), "optional": ("strength",), "embeddings": False},
    "coreset": {"required": (), "optional": ("strength",), "embeddings": True},
    "diversity": {"required": (), "optional": ("min_distance", "strength"), "embeddings": True},
    "typicality": {"required": (), "optional": ("strength",), "embeddings": True},
    "similarity": {"required": (), "optional": ("metric", "strength"), "embeddings": True},
    "weights": {"required": ("field",), "optional": ("strength",), "embeddings": False},
    "threshold": {"required": ("field", "operation", "value"), "optional": (), "embeddings": False},
    "balance": {"required": ("field", "target"), "optional": (), "embeddings": False},
    **pred.STRATEGIES,
}
# Strategies over a metadata field that may name a prediction task (`task`, and for scores `score`) instead;
# the service resolves the task to its field path in the dataset.
TASK_STRATEGIES = ("uncertainty", "coral", "weights", "threshold", "balance")
# Strategy parameters that may stand at the top level of a request next to a single `strategy`.
PARAM_KEYS = ("field", "operation", "value", "target", "metric", "strength", "weight", "task", "score")
MAX_STRATEGIES = 8
NEEDS_N_SAMPLES = ("auto", "coreset", "typicality")


def where(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _positive(value) -> bool:
    return is_finite_number(value) and value > 0


def check_request(data: dict) -> list[dict]:
    """The strategy list of a run request (`strategy` with its parameters beside it, or `strategies`), every
    strategy checked, their combination and the stopping rules (`n_samples`, `min_distance`) too."""
    single, many = data.get("strategy"), data.get("strategies")
    top_params = [k for k in PARAM_KEYS if data.get(k) is not None]
    if single is None and many is None:
        raise SamplerError(f"required: one of {', '.join(STRATEGIES)} (or a list in 'strategies')", "strategy")
    if single is not None and many is not None:
        raise SamplerError("give either 'strategy' or 'strategies', not both", "strategies")
    if many is not None:
        if top_params:
            raise SamplerError("with 'strategies', put the parameters inside each strategy object", top_params[0])
        specs = check_strategies(many)
    else:
        specs = [check_strategy({"strategy": single, **{k: data[k] for k in top_params}}, "")]
    check_stops(specs, data.get("n_samples"), data.get("min_distance"))
    return specs


def check_strategies(specs) -> list[dict]:
    """A list of strategy objects, each checked (`strategies[i]` names the one at fault), and how they combine."""
    if not isinstance(specs, (list, tuple)) or not specs:
        raise SamplerError("must be a non-empty list of strategy objects", "strategies")
    if len(specs) > MAX_STRATEGIES:
        raise SamplerError(f"at most {MAX_STRATEGIES} strategies can be combined", "strategies")
    out = [check_strategy(spec, f"strategies[{i}]") for i, spec in enumerate(specs)]
    check_combination([s["strategy"] for s in out])
    return out


def check_strategy(spec, prefix: str) -> dict:
    """One strategy object: a known strategy, its parameters and nothing else, each value of the right kind."""
    if not isinstance(spec, dict):
        raise SamplerError("must be an object with a 'strategy' key", prefix or "strategy")
    name = spec.get("strategy")
    if not isinstance(name, str) or name not in STRATEGIES:  # a list or object here is not hashable
        raise SamplerError(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}", where(prefix, "strategy"))
    info = STRATEGIES[name]
    by_task = "task" in spec or "score" in spec
    if by_task:
        _check_task(spec, name, prefix)
    allowed = info["required"] + info["optional"] + (("task", "score") if by_task else ())
    for key in spec:
        if key != "strategy" and key not in allowed:
            raise SamplerError(f"not a parameter of the {name} strategy", where(prefix, key))
    for key in info["required"]:
        if spec.get(key) is None and not (key == "field" and by_task):
            raise SamplerError(f"required by the {name} strategy", where(prefix, key))
    for key in ("strength", "min_distance"):
        if key in spec and not _positive(spec[key]):
            raise SamplerError("must be a number greater than 0", where(prefix, key))
    if "metric" in spec and spec["metric"] not in METRICS:
        raise SamplerError(f"must be one of {', '.join(METRICS)}", where(prefix, "metric"))
    if "weight" in spec:
        pred.coral_weight(spec["weight"], where(prefix, "weight"))
    if name == "threshold":
        operation, value = spec["operation"], spec["value"]
        if operation not in OPERATIONS:
            raise SamplerError(f"must be one of {', '.join(OPERATIONS)}", where(prefix, "operation"))
        if operation != "eq" and not is_finite_number(value):
            raise SamplerError(f"must be a finite number for operation {operation!r}", where(prefix, "value"))
        if operation == "eq" and not isinstance(value, (str, int, float, bool)):
            raise SamplerError("must be a string, number or boolean", where(prefix, "value"))
    if name == "balance":
        target = spec["target"]
        ok = target == "uniform" or (
            isinstance(target, dict)
            and target
            and all(is_finite_number(v) and v >= 0 for v in target.values())
            and any(v > 0 for v in target.values())
        )
        if not ok:
            raise SamplerError(
                "must be 'uniform' or a mapping of category to a non-negative share (not all zero)",
                where(prefix, "target"),
            )
    return dict(spec)


def _check_task(spec: dict, name: str, prefix: str) -> None:
    """`task` (and `score`) in place of `field`: uncertainty and coral use a score of the task (by default the task
    type's uncertainty score), balance the predicted class. That the task exists is the dataset's business."""
    task, score = spec.get("task"), spec.get("score")
    if spec.get("field") is not None:
        raise SamplerError("give either 'field' or 'task', not both", where(prefix, "task"))
    if name not in TASK_STRATEGIES:
        raise SamplerError(f"the {name} strategy does not use a task", where(prefix, "task"))
    if not isinstance(task, str) or not task:
        raise SamplerError("must be the name of a prediction task of the dataset", where(prefix, "task"))
    if name == "balance" and score is not None:
        raise SamplerError("balance uses the task's predicted class, not a score", where(prefix, "score"))
    if score is not None and not isinstance(score, str):
        raise SamplerError("must be the name of a score of the task", where(prefix, "score"))


def check_combination(names: list[str]) -> None:
    """Strategies combine as `select` describes: one distance objective, one of each kind, auto only with thresholds."""
    counts = {n: names.count(n) for n in names}
    if counts.get("coreset", 0) + counts.get("diversity", 0) + counts.get("coral", 0) > 1:
        raise SamplerError("combine at most one coreset or diversity strategy", "strategies")
    for name in ("balance", "typicality", "similarity", "random"):
        if counts.get(name, 0) > 1:
            raise SamplerError(f"at most one {name} strategy", "strategies")
    if "auto" in counts and len(names) - counts.get("threshold", 0) > 1:
        raise SamplerError("auto is a combination already; it combines only with threshold strategies", "strategies")


def check_stops(specs: list[dict], n_samples, min_distance) -> None:
    """When the selection stops: after `n_samples` picks (which auto, coreset and typicality need), or for
    diversity once no candidate is farther than its `min_distance` (its own, or the request's)."""
    names = [s["strategy"] for s in specs]
    if min_distance is not None and not _positive(min_distance):
        raise SamplerError("must be a number greater than 0", "min_distance")
    if min_distance is not None and "diversity" not in names:
        raise SamplerError("only the diversity strategy stops at a minimum distance", "min_distance")
    for spec in specs:
        if spec["strategy"] in NEEDS_N_SAMPLES and n_samples is None:
            raise SamplerError(f"required by the {spec['strategy']} strategy", "n_samples")
        if spec["strategy"] == "diversity" and spec.get("min_distance") is None and min_distance is None:
            raise SamplerError("required by the diversity strategy", "min_distance")
