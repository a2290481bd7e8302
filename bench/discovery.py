"""How far the offline grammar proposer gets on each SLDBench task in a fixed time.

Runs a small steady-state evolution per task (a population of the best programs by
validation R², children from `OfflineProposer`, scored on validation in two worker
processes), then scores the validation-best program once on test. Human and power-law
baseline seeds (tasks/<task>/seeds/{human,baseline}.py) are scored on test for the table
when they exist. Selection never reads test.

    python bench/discovery.py [--tasks a,b] [--minutes M] [--seed S]
    python bench/discovery.py --driver loop --iterations N   # through evolve.loop instead

writes bench/results/discovery.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's evolve, not an older installed copy

from evolve.config import ScorerConfig  # noqa: E402
from evolve.program import detect_api, ensure_block, wrap_law_program  # noqa: E402
from evolve.propose.base import ProposalRequest  # noqa: E402
from evolve.propose.grammar_code import describe_spec, spec_from_code  # noqa: E402
from evolve.propose.offline import OfflineProposer, readable_spec  # noqa: E402
from evolve.records import ProgramRecord  # noqa: E402
from evolve.scoring.scorer import Evaluation, Scorer  # noqa: E402
from evolve.tasks import Task, load_task, shipped_task_names  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "discovery.md"
# What issue 5 asks each task to beat. "test" bars are test R² of published programs;
# "in-sample" bars are SLDBench leaderboard means fitted and scored on train, so the
# table also gives our law's in-sample R² to compare with them like for like.
BARS = {
    "data_constrained_scaling_law": "0.978 test",
    "domain_mixture_scaling_law": "0.9932 test",
    "easy_question_scaling_law": "0.928 in-sample",
    "lr_bsz_scaling_law": "0.546 test",
    "moe_scaling_law": "0.958 in-sample",
    "parallel_scaling_law": "0.99996 in-sample",
    "sft_scaling_law": "0.9933 test",
    "vocab_scaling_law": "0.986 in-sample",
}
COLUMNS = 11
POPULATION = 16
INSPIRATIONS = 2
WORKERS = 2
PARSIMONY = 0.05  # share of the best validation error a smaller law may add and still be chosen

_WORKER_SCORER: Scorer | None = None
_WORKER_TASKS: dict[str, Task] = {}


def score_in_worker(code: str, task_name: str, split: str) -> Evaluation:
    """Score in a worker process (in-process scorer there: the pool itself is the isolation)."""
    global _WORKER_SCORER
    if _WORKER_SCORER is None:
        _WORKER_SCORER = Scorer(ScorerConfig(isolate=False, workers=1))
    task = _WORKER_TASKS.setdefault(task_name, load_task(task_name))
    evaluation = _WORKER_SCORER.score(code, task, split)
    return Evaluation(evaluation.status, evaluation.split, evaluation.metrics, evaluation.message[-500:], {}, evaluation.n_params, evaluation.seconds)


@dataclass
class Population:
    """The best distinct programs by validation R² (the parents), plus recent failures."""

    size: int
    members: list[ProgramRecord] = field(default_factory=list)
    failures: list[ProgramRecord] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, record: ProgramRecord) -> None:
        if not record.ok:
            self.failures = (self.failures + [record])[-3:]
            return
        self.members.append(record)
        self.members.sort(key=lambda r: (-r.r2, r.n_params or 0))
        del self.members[self.size :]

    def best(self) -> ProgramRecord | None:
        return self.members[0] if self.members else None

    def chosen(self) -> ProgramRecord | None:
        """The program to report: the fewest parameters among those whose validation error
        is within PARSIMONY of the best one's (a smaller law that validates as well is
        the safer extrapolation); still chosen on validation alone."""
        best = self.best()
        if best is None:
            return None
        slack = PARSIMONY * max(1.0 - best.r2, 1e-6)
        close = [m for m in self.members if m.r2 >= best.r2 - slack]
        return min(close, key=lambda r: (r.n_params or 0, -r.r2))

    def request(self, task: Task, rng: random.Random) -> ProposalRequest:
        """A parent by rank-biased choice (the best most often), inspirations at random."""
        weights = [1.0 / (rank + 1) for rank in range(len(self.members))]
        parent = rng.choices(self.members, weights=weights)[0]
        others = [m for m in self.members if m is not parent]
        inspirations = tuple(rng.sample(others, min(INSPIRATIONS, len(others))))
        return ProposalRequest(task, parent, inspirations, tuple(self.failures), "full", rng.randrange(2**31))


def seed_programs(task: Task) -> dict[str, str]:
    """The task's shipped seed laws, as fit-API programs, by file stem."""
    programs = {}
    for path in sorted((task.path / "seeds").glob("*.py")):
        text = path.read_text()
        try:
            api = detect_api(text)
        except ValueError:
            continue
        programs[path.stem] = wrap_law_program(text, task.features, task.targets) if api == "law" else ensure_block(text)
    return programs


def empty_parent(task: Task) -> ProgramRecord:
    """A parent with no law spec: the proposer answers it with fresh laws from its templates."""
    from evolve.metrics import failed_metrics

    evaluation = Evaluation("exception", "validation", failed_metrics(len(task.targets)), "no program yet")
    return ProgramRecord(code="", validation=evaluation)


def evolve_task(task: Task, minutes: float, seed: int, pool: ProcessPoolExecutor, seeds: dict[str, str]) -> dict:
    """Steady-state evolution until the time is up; returns the best record and counts."""
    proposer = OfflineProposer(task)
    rng = random.Random(seed)
    population = Population(POPULATION)
    started = time.perf_counter()
    deadline = started + 60 * minutes
    evaluations = 0
    pending: dict[Future, tuple[str, str]] = {}
    for name, code in seeds.items():
        pending[pool.submit(score_in_worker, code, task.name, "validation")] = (code, f"seed {name}")
    seen: set[str] = set()
    while time.perf_counter() < deadline or pending:
        while len(pending) < WORKERS and time.perf_counter() < deadline:
            request = population.request(task, rng) if population.members else ProposalRequest(task, empty_parent(task), seed=rng.randrange(2**31))
            proposal = proposer.propose(request)
            if proposal.code in seen:
                continue
            seen.add(proposal.code)
            pending[pool.submit(score_in_worker, proposal.code, task.name, "validation")] = (proposal.code, proposal.explanation)
        if not pending:
            break
        done, _ = wait(pending, timeout=max(1.0, deadline - time.perf_counter()) + 120, return_when=FIRST_COMPLETED)
        for future in done:
            code, explanation = pending.pop(future)
            evaluations += 1
            try:
                evaluation = future.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker is a failed candidate
                print(f"  worker failed: {exc}", file=sys.stderr)
                continue
            population.add(ProgramRecord(code=code, validation=evaluation, proposer="offline", explanation=explanation))
            best = population.best()
            if best is not None and best.code == code:
                print(f"  {time.perf_counter() - started:6.0f}s  eval {evaluations:4d}  val R2 {evaluation.metrics.r2:.4f}  {explanation}", flush=True)
    return {"best": population.chosen(), "evaluations": evaluations, "seconds": time.perf_counter() - started}


def test_r2(code: str, task: Task, pool: ProcessPoolExecutor, split: str) -> Evaluation:
    """Score once on a reporting split (test, or train for the in-sample figure)."""
    return pool.submit(score_in_worker, code, task.name, split).result()


def formula(record: ProgramRecord, task: Task) -> str:
    spec = spec_from_code(record.code)
    if spec is None or readable_spec(record.code, OfflineProposer(task).ctx) is None:
        return record.explanation
    return describe_spec(spec, OfflineProposer(task).ctx)


def cell(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return "n/a"
    if not evaluation.ok:
        return evaluation.status
    r2 = evaluation.metrics.r2
    return f"{r2:.6f}" if r2 > 0.999 else f"{r2:.4f}"  # parallel's bar is 0.99996


def run_with_loop(task: Task, iterations: int, seed: int) -> dict:
    """The same search through the project's loop (MAP-Elites archive, sandboxed scorer)."""
    import tempfile

    from evolve.config import RunConfig
    from evolve.loop import run_evolution

    run_dir = Path(tempfile.mkdtemp(prefix=f"discovery-{task.name}-")) / "run"
    config = RunConfig(task=task.name, iterations=iterations, seed=seed, proposer="offline", run_dir=str(run_dir), top_k_test=1)
    summary = run_evolution(config, proposer=OfflineProposer(task))
    best = summary.top[0] if summary.top else summary.best
    return {"best": best, "evaluations": summary.evaluations, "seconds": summary.seconds}


def run(task_names: list[str], minutes: float, seed: int, iterations: int = 0) -> list[dict]:
    """Each task in turn: our driver for `minutes` (or the project loop for `iterations`)."""
    rows = []
    with ProcessPoolExecutor(max_workers=WORKERS) as pool:
        for name in task_names:
            task = load_task(name)
            seeds = seed_programs(task)
            budget = f"{iterations} iterations" if iterations else f"{minutes} min"
            print(f"{name}: {budget}, seeds: {', '.join(seeds) or 'none'}", flush=True)
            seed_tests = {stem: test_r2(code, task, pool, "test") for stem, code in seeds.items()}
            result = run_with_loop(task, iterations, seed) if iterations else evolve_task(task, minutes, seed, pool, seeds)
            best = result["best"]
            best_test = test_r2(best.code, task, pool, "test") if best is not None else None
            best_train = test_r2(best.code, task, pool, "train") if best is not None else None
            rows.append({
                "task": name,
                "human": seed_tests.get("human"),
                "baseline": seed_tests.get("baseline"),
                "val": best.validation if best else None,
                "test": best_test,
                "train": best_train,
                "formula": formula(best, task) if best else "",
                "seconds": result["seconds"],
                "evaluations": result["evaluations"],
            })
            print(f"  best: val {cell(rows[-1]['val'])} test {cell(best_test)}  {rows[-1]['formula']}", flush=True)
    return rows


def previous_rows() -> list[str]:
    """Table rows of an earlier run, so a run on a few tasks updates only their rows."""
    if not RESULTS.exists():
        return []
    text = RESULTS.read_text().splitlines()
    return [line for line in text if line.startswith("| ") and not line.startswith("| task") and line.count("|") == COLUMNS + 1]


def previous_notes() -> list[str]:
    """The hand-written `## Notes` section of the results file, kept across runs."""
    if not RESULTS.exists():
        return []
    text = RESULTS.read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith("## Notes")), None)
    return [""] + text[start:] if start is not None else []


def write_table(rows: list[dict], minutes: float, seed: int, iterations: int = 0) -> None:
    if iterations:
        driver = f"evolve.loop.run_evolution ({iterations} iterations per task, default archive and sandboxed scorer)"
        command = f"python bench/discovery.py --driver loop --iterations {iterations} --seed {seed}"
    else:
        driver = f"bench/discovery.py's own steady-state evolution (population {POPULATION}, {WORKERS} worker processes), {minutes} min per task"
        command = f"python bench/discovery.py --minutes {minutes} --seed {seed}"
    lines = [
        "# Offline proposer: discovery benchmark",
        "",
        f"Latest driver: {driver}, seed {seed}. Selection by validation R² only; test scored once at the end.",
        "Rows from earlier runs are kept; each row names the command that produced it.",
        f"Command: `{command}`",
        "",
        "| task | bar to beat | human law test R² | power-law baseline test R² | offline val R² | offline test R² | offline in-sample R² | formula | time (s) | evaluations | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    kept = [line for line in previous_rows() if line.split("|")[1].strip() not in {r["task"] for r in rows}]
    lines += kept
    for r in rows:
        lines.append(
            f"| {r['task']} | {BARS.get(r['task'], '')} | {cell(r['human'])} | {cell(r['baseline'])} | {cell(r['val'])} | {cell(r['test'])} | {cell(r['train'])} | "
            f"`{r['formula']}` | {r['seconds']:.0f} | {r['evaluations']} | `{command}` |"
        )
    lines.sort(key=lambda line: line.split("|")[1].strip() if line.startswith("| ") and not line.startswith("| task") else "")
    lines += previous_notes()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    parser.add_argument("--minutes", type=float, default=15.0, help="search time per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--driver", choices=("local", "loop"), default="local", help="local: this script's evolution; loop: evolve.loop")
    parser.add_argument("--iterations", type=int, default=300, help="iterations per task with --driver loop")
    args = parser.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t] or shipped_task_names()
    iterations = args.iterations if args.driver == "loop" else 0
    rows = run(names, args.minutes, args.seed, iterations)
    write_table(rows, args.minutes, args.seed, iterations)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
