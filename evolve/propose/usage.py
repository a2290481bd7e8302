"""Token and cost totals of a run, per run and per model; safe to update from many threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    failures: int = 0
    estimated_calls: int = 0  # calls whose tokens were estimated from text length


_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cost_usd", "calls", "failures", "estimated_calls")


@dataclass
class Usage:
    """Running totals of one run, per run and per model; safe to update from many threads.

    `to_dict`/`from_dict` let a resumed run continue its totals (and its budget).
    """

    totals: ModelUsage = field(default_factory=ModelUsage)
    per_model: dict[str, ModelUsage] = field(default_factory=dict)
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def prompt_tokens(self) -> int:
        return self.totals.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.totals.completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.totals.prompt_tokens + self.totals.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.totals.cost_usd

    @property
    def calls(self) -> int:
        return self.totals.calls

    @property
    def failures(self) -> int:
        return self.totals.failures

    def record_call(self, model: str, prompt: int, completion: int, cost: float, estimated: bool) -> None:
        with self._lock:
            for bucket in (self.totals, self.per_model.setdefault(model, ModelUsage())):
                bucket.prompt_tokens += prompt
                bucket.completion_tokens += completion
                bucket.cost_usd += cost
                bucket.calls += 1
                bucket.estimated_calls += int(estimated)

    def record_failure(self, model: str) -> None:
        with self._lock:
            self.totals.failures += 1
            self.per_model.setdefault(model, ModelUsage()).failures += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {name: getattr(self.totals, name) for name in _USAGE_FIELDS}
            data["retries"] = self.retries
            data["per_model"] = {
                model: {name: getattr(bucket, name) for name in _USAGE_FIELDS}
                for model, bucket in self.per_model.items()
            }
            return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        usage = cls(totals=_model_usage_from(data), retries=int(data.get("retries", 0)))
        for model, values in (data.get("per_model") or {}).items():
            usage.per_model[model] = _model_usage_from(values)
        return usage


def _model_usage_from(values: dict[str, Any]) -> ModelUsage:
    return ModelUsage(
        **{
            name: (float if name == "cost_usd" else int)(values.get(name, 0))
            for name in _USAGE_FIELDS
        }
    )
