"""`evolve run`: evolve laws for a task, or resume a run (`--resume RUN`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from evolve.cli.display import console, format_r2, print_code, print_table, safe_text
from evolve.cli.options import add_setting_options, flag_of, given_settings
from evolve.cli.progress import RunProgress
from evolve.config import ConfigError, ModelSpec, RunConfig, load_config_file, run_config_from_dict
from evolve.extrapolation import stored_warnings, warning_lines
from evolve.loop import run_evolution
from evolve.program import function_source, top_level_functions
from evolve.propose.prompts import SYSTEM_TEMPLATE, USER_TEMPLATE
from evolve.report.export import FORMULA_HEADER
from evolve.store.rundir import BEST_PROGRAM_NAME, open_read_only

RESUMABLE = {"iterations"}  # the only setting a resume may change: how far the run goes


def parse_model_flag(text: str) -> ModelSpec:
    """'NAME' or 'NAME:WEIGHT' (an ensemble is several --model flags)."""
    name, _, weight = text.rpartition(":")
    try:
        return ModelSpec(name=name, weight=float(weight)) if name else ModelSpec(name=text)
    except ValueError:  # a colon that is part of the name, as in 'qwen2.5:7b'
        return ModelSpec(name=text)


def recorded_seed(run_dir: Path) -> int | None:
    with open_read_only(run_dir) as archive:
        return (archive.get_meta("config") or {}).get("seed")


def prompts_folder_ok(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (SYSTEM_TEMPLATE, USER_TEMPLATE))


def build_config(task: str | None, config_file: Path | None, models: tuple[str, ...], given: dict) -> RunConfig:
    """The config file's settings with the given flags laid over them, checked once by the
    same builder (types, choices, unknown keys) whichever way a setting came."""
    data = dict(load_config_file(config_file)) if config_file else {}
    if task:
        data["task"] = task
    for dotted, value in given.items():
        section, _, name = dotted.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] must be a table")
        target[name] = list(value) if isinstance(value, tuple) else value
    config = run_config_from_dict(data)
    if config.replay and config.seed is None:  # a replay needs the recorded run's seed to make the same requests
        config = dataclasses.replace(config, seed=recorded_seed(Path(config.replay)))
    if models:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, models=tuple(parse_model_flag(m) for m in models)))
    if not config.task:
        raise ConfigError("name a task: evolve run TASK (see `evolve tasks`)")
    wrong = [text for bad, text in (
        (config.iterations < 0, f"iterations must be >= 0, not {config.iterations}"),
        (config.archive.islands < 1, f"islands must be >= 1, not {config.archive.islands}"),
        (config.scorer.workers < 1, f"workers must be >= 1, not {config.scorer.workers}"),
        (config.model.concurrency < 0, f"concurrency must be >= 0 (0: automatic), not {config.model.concurrency}"),
        (config.scorer.timeout_s <= 0, f"the timeout must be above 0, not {config.scorer.timeout_s}"),
        (config.budget_usd is not None and not any(m.price_prompt_per_mtok or m.price_completion_per_mtok for m in config.model.models),
         "a cost budget needs model prices (price_prompt_per_mtok, price_completion_per_mtok under [[model.models]] in --config): "
         "without them every request costs $0; use --budget-tokens for a budget in tokens"),
        (config.prompts_dir is not None and not prompts_folder_ok(Path(config.prompts_dir)),
         f"the prompts folder {config.prompts_dir} does not exist or lacks {SYSTEM_TEMPLATE} and {USER_TEMPLATE}"),
    ) if bad]
    if wrong:
        raise ConfigError("; ".join(wrong))  # the setting that is wrong, not a list of every rule
    return config


@click.command("run", help="Evolve laws for a task (the offline proposer without an API key).")
@click.argument("task", required=False)
@click.option("--resume", "resume", type=click.Path(path_type=Path), metavar="RUN", help="continue a stopped or killed run from its directory")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="a TOML file with run, [model], [archive] and [scorer] settings")
@click.option("--model", "models", multiple=True, help="model name, or NAME:WEIGHT; repeat for an ensemble")
@click.option("--quiet", is_flag=True, help="no progress display")
@add_setting_options
def run_command(task: str | None, resume: Path | None, config_file: Path | None, models: tuple[str, ...], quiet: bool, **settings) -> int:
    try:
        summary = start_or_resume(task, resume, config_file, models, quiet, settings)
    except KeyboardInterrupt as exc:
        # click turns a KeyboardInterrupt into a bare Abort; this one keeps the run directory
        # so `evolve` can say which run to resume (one line, no traceback)
        abort = click.exceptions.Abort()
        abort.run_dir = getattr(exc, "run_dir", None)  # type: ignore[attr-defined]
        raise abort from None
    show_summary(summary)
    return 0


def start_or_resume(task: str | None, resume: Path | None, config_file: Path | None, models: tuple[str, ...], quiet: bool, settings: dict):
    given = given_settings(settings)
    progress = RunProgress(enabled=not quiet)
    if resume is not None:
        fixed = [flag_of(k) for k in sorted(set(given) - RESUMABLE)]
        fixed += (["--config"] if config_file else []) + (["--model"] if models else []) + ([f"the task {task}"] if task else [])
        if fixed:
            names = ", ".join(fixed)
            raise ConfigError(f"a resumed run keeps its own settings; only --iterations can change (drop {names})")
        return run_evolution(RunConfig(), resume_dir=resume, progress=progress, iterations=given.get("iterations"))
    return run_evolution(build_config(task, config_file, models, given), progress=progress)


def chosen_because(run_dir: Path) -> str:
    """Why the run returned the law it did (evolve.selection stores its reason)."""
    try:
        with open_read_only(run_dir) as archive:
            return str((archive.get_meta("selection") or {}).get("reason", ""))
    except Exception:  # noqa: BLE001 - an explanation, never a reason to fail a finished run
        return ""


def chosen_law_warnings(run_dir: Path, program_id: int) -> list[str]:
    """What the run's end found the chosen law doing beyond the data (evolve.extrapolation)."""
    try:
        with open_read_only(run_dir) as archive:
            return stored_warnings(archive, program_id) or []
    except Exception:  # noqa: BLE001 - a warning, never a reason to fail a finished run
        return []


def show_summary(summary) -> None:
    out = console()
    rows = []
    for record in summary.top:
        test = record.test
        rows.append([record.id, record.proposer, record.iteration, record.n_params, format_r2(record.r2), format_r2(test.metrics.r2 if test and test.ok else None if test is None else -1.0)])
    print_table(f"Top programs of {summary.run_dir} (the chosen law first, then by validation R²; test R² is for reporting, selection used validation only)", ["id", "proposer", "iteration", "params", "validation R²", "test R²"], rows, out)
    out.print(f"{summary.iterations} iterations, {summary.evaluations} programs ({summary.failures} failed) in {summary.seconds:.0f} s; {safe_text(summary.stopped_reason)}", markup=False)
    if summary.usage:
        cut = summary.usage.get("cut_short") or {}
        cut_note = f" (of them {cut['prompt_tokens']} + {cut['completion_tokens']} estimated, {cut['calls']} streams cut short)" if cut.get("calls") else ""
        out.print(f"tokens: {summary.usage.get('prompt_tokens', 0)} prompt + {summary.usage.get('completion_tokens', 0)} completion{cut_note}")
    if summary.best is not None:
        show_best_law(summary, out)


def show_best_law(summary, out) -> None:
    """The winning law itself, next to the best seed it had to beat."""
    best = summary.best
    seeds = [r for r in summary.top if r.proposer == "seed"]
    against = f" (best seed in the top {len(summary.top)}: {seeds[0].r2:.4f})" if seeds and seeds[0] is not best else ""
    out.print(f"\nbest law: program {best.id}, validation R² {best.r2:.4f}{against}")
    reason = chosen_because(summary.run_dir)
    if reason:
        out.print(f"  chosen from train alone: {safe_text(reason, keep_newlines=False)}", markup=False)
    shown = formula_lines(summary.run_dir / BEST_PROGRAM_NAME)
    if shown:
        out.print("\n".join(safe_text(line, keep_newlines=False) for line in shown), markup=False)
    else:
        source = law_source(best.code)
        if source:
            out.print("formula: could not be recovered from the code; the code that computes it:", markup=False)
            print_code(out, safe_text(source, limit=20_000))
    for line in warning_lines(chosen_law_warnings(summary.run_dir, best.id)):
        out.print(safe_text(line, keep_newlines=False), markup=False)
    out.print(f"written to {summary.run_dir / BEST_PROGRAM_NAME}")


def law_source(code: str) -> str | None:
    """The functions that compute the law: the grammar's `predict_<target>` functions where
    there are some (its `scaling_law_func` only dispatches to them, and showed nothing of
    the law), else `scaling_law_func` or `law`."""
    laws = [function_source(code, name) for name in sorted(top_level_functions(code)) if name.startswith("predict_")]
    if any(laws):
        return "\n\n".join(filter(None, laws))
    return function_source(code, "scaling_law_func") or function_source(code, "law")


def formula_lines(best_program: Path) -> list[str]:
    """The checked formula that best.py's header carries (as `archive show` prints it), or
    none when it could not be recovered: the law itself, not a multi-target dispatcher."""
    try:
        header = best_program.read_text().split("# EVOLVE-BLOCK-START", 1)[0].splitlines()
    except OSError:
        return []
    start = next((i for i, line in enumerate(header) if line.startswith(FORMULA_HEADER)), None)
    if start is None:
        return []
    title, laws = "law of group" + header[start][len(FORMULA_HEADER):], []
    for line in header[start + 1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#     "):  # one law per target, indented
            laws.append(line[1:].rstrip())
        elif not laws:  # the title's own continuation line
            title += " " + line[1:].strip()
    return [title, *laws]
