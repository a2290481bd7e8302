"""Which proposer a run uses: the LLM when an endpoint is configured (or asked for), a
replay of a recorded run, else the offline grammar."""

from __future__ import annotations

import random
from pathlib import Path

from evolve.config import ConfigError, RunConfig
from evolve.propose.base import Proposer
from evolve.tasks import Task


def make_proposer(config: RunConfig, task: Task, stored_usage: dict | None = None) -> tuple[Proposer, object | None]:
    """The LLM proposer when an API key or endpoint is configured (or asked for), else the offline one.

    Returns the proposer and the usage tracker (None for the offline proposer); a resumed
    run continues its token totals, so budgets hold across restarts.
    """
    if config.replay:
        from evolve.propose.replay import ReplayProposer

        return ReplayProposer(Path(config.replay), parallel_requests=max(1, config.model.concurrency),
                              prompts_dir=Path(config.prompts_dir) if config.prompts_dir else None), None
    choice = config.proposer
    if choice == "auto":
        has_endpoint = config.model.resolved_api_key() or config.model.resolved_base_url()
        choice = "llm" if has_endpoint else "offline"
    if choice == "offline":
        from evolve.propose.offline import OfflineProposer

        return OfflineProposer(task), None
    if choice == "llm":
        from evolve.propose.client import LLMClient, Usage
        from evolve.propose.model import LLMProposer

        usage = Usage.from_dict(stored_usage) if stored_usage else Usage()
        client = LLMClient(config.model, usage=usage, budget_tokens=config.budget_tokens, budget_usd=config.budget_usd, rng=random.Random(config.seed))
        from evolve.propose.endpoint import effective_concurrency

        return LLMProposer(client, Path(config.prompts_dir) if config.prompts_dir else None, effective_concurrency(config.model),
                           prompt_style=config.prompt_style), usage
    raise ConfigError(f"unknown proposer '{config.proposer}' (choose auto, llm or offline)")
