"""Settings as frozen dataclasses, read from a TOML file and overridden by CLI flags.

One source of truth per setting: defaults here, then the config file, then flags. Secrets
(the API key) come from the environment or the file and are never stored in a run's
database nor passed to candidate programs.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOMLDecodeError = tomllib.TOMLDecodeError


class ConfigError(ValueError):
    """A config file or flag that cannot be used; its message is one line."""


def setting(default: Any, help: str, flag: str | None = None, choices: tuple[str, ...] | None = None, cli: bool = True) -> Any:
    """A run setting declared once: its default, its help text and (optionally) its flag name
    and allowed values. The CLI's options are generated from these (evolve.cli.options)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "cli": cli})


@dataclass(frozen=True)
class ScorerConfig:
    """Limits of one candidate evaluation and the size of the warm worker pool."""

    workers: int = setting(2, "programs scored in parallel (warm sandbox workers)")
    timeout_s: float = setting(60.0, "seconds one program may take across all its folds", flag="--timeout")
    memory_mb: int = setting(4096, "memory limit of one program's processes, in MB")
    max_output_mb: int = setting(8, "largest result a program may send back, in MB", cli=False)
    isolate: bool = setting(True, "False only for benchmarks that compare against in-process scoring", cli=False)
    executor: str = setting("local", "where programs are scored: this machine or a Ray cluster (one warm pool per node)",
                            choices=("local", "ray"))
    ray_address: str | None = setting(None, "Ray cluster address HOST:PORT (default: RAY_ADDRESS or a local Ray)")
    allow_weak_sandbox: bool = setting(False, "use Ray nodes whose sandbox cannot isolate (no root, no user namespaces)")


@dataclass(frozen=True)
class ModelSpec:
    """One OpenAI-compatible model; weight is its share of requests in an ensemble."""

    name: str
    weight: float = 1.0
    price_prompt_per_mtok: float = 0.0  # USD per million prompt tokens
    price_completion_per_mtok: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    models: tuple[ModelSpec, ...] = setting((), "models as NAME or NAME:WEIGHT; repeat for an ensemble", cli=False)
    base_url: str | None = setting(None, "OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
    api_key: str | None = field(default=None, repr=False, metadata={"cli": False})  # default: OPENAI_API_KEY
    temperature: float = setting(0.8, "sampling temperature")
    max_tokens: int = setting(1500, "most tokens one reply may have (a law edit needs fewer than 1500)")
    request_timeout_s: float = setting(120.0, "seconds before a model request is given up", flag="--request-timeout")
    max_retries: int = setting(5, "retries of a failed model request")
    concurrency: int = setting(0, "model requests in flight at once (0: 1 for a server on localhost, else 2)")
    outage_limit_s: float = setting(600.0, "seconds the endpoint may answer nothing (refused, 5xx, timeouts) before the run stops; "
                                    "requests lost meanwhile are asked again", flag="--outage-limit")
    stream: bool = setting(True, "stream replies, so a timeout or Ctrl-C stops the generation on the server")

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("OPENAI_API_KEY") or None

    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None


@dataclass(frozen=True)
class ArchiveConfig:
    islands: int = setting(5, "islands evolving apart, with ring migration")
    migration_interval: int = setting(10, "iterations between ring migrations")
    param_bins: int = setting(8, "grid cells along the number of fitted parameters")
    complexity_bins: int = setting(8, "grid cells along the program's syntax-tree size")
    exploit_ratio: float = setting(0.6, "chance the parent is its island's best (else a random elite)")
    inspirations: int = setting(3, "other elites shown to the proposer with the parent")


@dataclass(frozen=True)
class RunConfig:
    task: str = setting("", "a task name or folder", cli=False)
    iterations: int = setting(50, "proposals to evolve in all (with --resume: the total the run goes to, counting the ones it has; default its own)")
    proposer: str = setting("auto", "auto: the model when an API key or endpoint is set, else offline", choices=("auto", "llm", "offline"))
    edit_mode: str = setting("diff", "diff: SEARCH/REPLACE edits; full: rewrite the whole EVOLVE-BLOCK", choices=("diff", "full"))
    seed: int | None = setting(None, "fixed random seed for a reproducible run")
    seed_laws: tuple[str, ...] = setting((), "a seed law file (either program API); repeat for several", flag="--seed-law")
    budget_tokens: int | None = setting(None, "stop when this many tokens are spent")
    budget_usd: float | None = setting(None, "stop at this cost (needs model prices in --config)")
    top_k_test: int = setting(5, "best distinct programs re-scored on test at the end, for reporting")
    replay: str | None = setting(None, "answer model requests with the replies recorded in this run directory")
    prompt_style: str = setting("auto", "full: the detailed prompt; compact: a short one small models can follow; "
                                "auto: compact when the model's context is under 4096 tokens", choices=("auto", "full", "compact"))
    prompts_dir: str | None = setting(None, "a folder of Jinja2 templates (system.j2, user.j2) instead of the shipped prompts")
    run_dir: str | None = setting(None, "the run's directory (default archive/<task>-<timestamp>)")
    model: ModelConfig = ModelConfig()
    archive: ArchiveConfig = ArchiveConfig()
    scorer: ScorerConfig = ScorerConfig()


SECTIONS = {"model": ModelConfig, "archive": ArchiveConfig, "scorer": ScorerConfig}


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file parsed (the one place that picks tomllib or tomli); errors are the caller's."""
    return tomllib.loads(Path(path).read_text())


def load_config_file(path: str | Path) -> dict[str, Any]:
    try:
        return load_toml(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def build_dataclass(cls, values: dict[str, Any], where: str):
    """Make a config dataclass from a dict, refusing unknown keys, wrong types and values
    outside a setting's choices, by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = coerce(value, hints[name], f"{where}.{name}")
        choices = known[name].metadata.get("choices")
        if choices and kwargs[name] not in choices:
            raise ConfigError(f"{where}.{name} must be one of {', '.join(choices)}, not {value!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{where}]: {exc}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against a setting's type (bool, int, float, str, optional, tuple of str)."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be text, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        if args and args[0] is str and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of text, not {value!r}")
        return tuple(value)
    return value


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from a parsed TOML file: top-level run keys plus [model], [archive], [scorer]."""
    data = dict(data)
    model = dict(data.pop("model", {}))
    models = tuple(
        build_dataclass(ModelSpec, m if isinstance(m, dict) else {"name": m}, "model.models")
        for m in model.pop("models", [])
    )
    if "name" in model:  # shorthand: one model
        models = models + (ModelSpec(name=str(model.pop("name"))),)
    model_config = build_dataclass(ModelConfig, model, "model")
    model_config = dataclasses.replace(model_config, models=models)
    archive = build_dataclass(ArchiveConfig, data.pop("archive", {}), "archive")
    scorer = build_dataclass(ScorerConfig, data.pop("scorer", {}), "scorer")
    run = build_dataclass(RunConfig, data, "run")
    return dataclasses.replace(run, model=model_config, archive=archive, scorer=scorer)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The settings as plain data for the run database, without the API key."""
    data = dataclasses.asdict(config)
    data["model"].pop("api_key", None)
    return data


def config_from_stored(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `config_to_dict` output (for --resume)."""
    data = dict(data)
    model = dict(data.pop("model"))
    model["models"] = [dict(m) for m in model.get("models", [])]
    return run_config_from_dict({**data, "model": model})
