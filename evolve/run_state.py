"""The run state saved with every stored program: the RNG, the token totals of the programs
stored, and replies kept unscored by a Ctrl-C. The loop writes them (evolve.loop); the
archive stores them in one transaction with the program (evolve.store.database)."""

from __future__ import annotations

import dataclasses
import json
import random

from evolve.propose.base import Proposal, ProposalRequest
from evolve.status import Status


def usage_with(saved: dict, proposal: Proposal | None, live: dict) -> dict:
    """The stored programs' totals after storing `proposal`: its tokens, cost and call added
    to `saved` (per run and per model). Replies in flight or kept pending are not in them
    (the live totals are), so the saved totals equal the sum over the archive plus the
    tokens of streams cut short (`cut_short`, estimated, billed though no program came of
    them); the retry and failure counts and `cut_short`, which belong to no program, are the
    live ones."""
    totals = {**saved, "per_model": {m: dict(v) for m, v in (saved.get("per_model") or {}).items()}}
    _shift(totals, saved.get("cut_short"), -1)
    if proposal is not None and "reply" in proposal.extra:
        for bucket in (totals, totals["per_model"].setdefault(proposal.model or "", {})):
            bucket["prompt_tokens"] = bucket.get("prompt_tokens", 0) + proposal.prompt_tokens
            bucket["completion_tokens"] = bucket.get("completion_tokens", 0) + proposal.completion_tokens
            bucket["cost_usd"] = bucket.get("cost_usd", 0.0) + float(proposal.extra.get("cost_usd", 0.0))
            bucket["calls"] = bucket.get("calls", 0) + 1
            bucket["estimated_calls"] = bucket.get("estimated_calls", 0) + int(bool(proposal.extra.get("usage_estimated")))
    totals["retries"], totals["failures"] = live.get("retries", 0), live.get("failures", 0)
    for model, bucket in (live.get("per_model") or {}).items():
        totals["per_model"].setdefault(model, {})["failures"] = bucket.get("failures", 0)
    totals.pop("cut_short", None)
    if live.get("cut_short"):
        totals["cut_short"] = json.loads(json.dumps(live["cut_short"]))
        _shift(totals, totals["cut_short"], +1)
    return totals


def _shift(totals: dict, cut_short: dict | None, sign: int) -> None:
    """Add (sign +1) or take out (-1) the tokens and cost of streams cut short, per run and per model."""
    if not cut_short:
        return
    pairs = [(totals, cut_short)] + [(totals["per_model"].setdefault(model, {}), values)
                                     for model, values in (cut_short.get("per_model") or {}).items()]
    for bucket, values in pairs:
        for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
            bucket[name] = bucket.get(name, 0) + sign * values.get(name, 0)


def pending_to_json(request: ProposalRequest, proposal: Proposal | None) -> dict:
    """A child a Ctrl-C left unstored, for meta: its request and, when the reply had
    arrived (its scoring was cut short), the reply; without one it is asked for again."""
    fields = None
    if proposal is not None:
        fields = dataclasses.asdict(proposal)
        fields["status"] = str(proposal.status) if proposal.status is not None else None
    return {"parent_id": request.parent.id, "seed": request.seed, "edit_mode": request.edit_mode, "proposal": fields,
            "inspirations": [r.id for r in request.inspirations], "failures": [r.id for r in request.failures]}


def rng_state_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def pending_from_json(item: dict, archive, task) -> tuple[ProposalRequest | None, Proposal | None]:
    """The request (and reply, if it had arrived) of a pending item; no request when the
    programs it names are no longer in the archive."""
    proposal = None
    if item.get("proposal") is not None:
        fields = dict(item["proposal"])
        fields["status"] = Status(fields["status"]) if fields.get("status") else None
        proposal = Proposal(**fields)
    try:
        parent = archive.get(int(item["parent_id"]))
        company = {key: tuple(archive.get(int(i)) for i in item.get(key, [])) for key in ("inspirations", "failures")}
    except Exception:  # noqa: BLE001 - a pending item whose programs are gone cannot be placed
        return None, proposal
    edit_mode = item.get("edit_mode") or (proposal.edit_mode if proposal is not None else "") or "diff"
    return ProposalRequest(task=task, parent=parent, edit_mode=edit_mode, seed=int(item.get("seed", 0)), **company), proposal
