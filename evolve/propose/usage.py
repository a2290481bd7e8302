"""Token and cost totals of a run, per run and per model; safe to update from many threads.

Streams cut short (a timeout or a Ctrl-C mid-generation) are billed by the server for what it
generated, so their tokens are in the totals too, and also apart under `cut_short`: those
counts are estimates (the completion is the chunks received, the prompt characters / 4
unless the server sent usage), and they belong to no stored program.
"""

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
    cut_short: ModelUsage = field(default_factory=ModelUsage)  # streams that broke off: in the totals too
    cut_short_per_model: dict[str, ModelUsage] = field(default_factory=dict)
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

    def record_cut_short(self, model: str, prompt: int, completion: int, cost: float, estimated: bool) -> None:
        """A stream that broke off after the server had started generating: its tokens count
        (in the totals, the budget and `cut_short`), though no reply came of it."""
        with self._lock:
            buckets = (self.totals, self.per_model.setdefault(model, ModelUsage()),
                       self.cut_short, self.cut_short_per_model.setdefault(model, ModelUsage()))
            for index, bucket in enumerate(buckets):
                bucket.prompt_tokens += prompt
                bucket.completion_tokens += completion
                bucket.cost_usd += cost
                if index >= 2:  # a cut-short stream is no call in the totals (`calls` counts replies)
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
            data["per_model"] = _per_model_dict(self.per_model)
            if self.cut_short.calls:
                data["cut_short"] = {name: getattr(self.cut_short, name) for name in _CUT_SHORT_FIELDS}
                data["cut_short"]["per_model"] = _per_model_dict(self.cut_short_per_model, _CUT_SHORT_FIELDS)
            return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        usage = cls(totals=_model_usage_from(data), retries=int(data.get("retries", 0)))
        for model, values in (data.get("per_model") or {}).items():
            usage.per_model[model] = _model_usage_from(values)
        cut_short = data.get("cut_short") or {}
        usage.cut_short = _model_usage_from(cut_short)
        for model, values in (cut_short.get("per_model") or {}).items():
            usage.cut_short_per_model[model] = _model_usage_from(values)
        return usage


_CUT_SHORT_FIELDS = ("prompt_tokens", "completion_tokens", "cost_usd", "calls", "estimated_calls")


def _per_model_dict(buckets: dict[str, ModelUsage], fields: tuple[str, ...] = _USAGE_FIELDS) -> dict[str, dict[str, Any]]:
    return {model: {name: getattr(bucket, name) for name in fields} for model, bucket in buckets.items()}


def _model_usage_from(values: dict[str, Any]) -> ModelUsage:
    return ModelUsage(
        **{
            name: (float if name == "cost_usd" else int)(values.get(name, 0))
            for name in _USAGE_FIELDS
        }
    )
