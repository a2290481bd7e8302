"""The scorer's memo of a run's fits (evolve.scoring.memo): what the selection may reuse."""

import numpy as np

from evolve.config import ScorerConfig
from evolve.scoring.in_sandbox import GroupJob, RunReport
from evolve.scoring.memo import FitMemo
from evolve.scoring.scorer import Scorer, group_jobs
from evolve.status import Status
from evolve.tasks import load_task

LAW = """import numpy as np

def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]

def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
"""


def jobs(shift: float = 0.0) -> list[GroupJob]:
    x = np.arange(6, dtype=float).reshape(-1, 1) + shift
    return [GroupJob("g", x, x[:, 0] * 2, x[:2])]


def report(values) -> RunReport:
    return RunReport(Status.OK, predictions={"g": np.asarray(values, dtype=float)}, params={"g": [1.0]})


def test_a_fit_is_found_again_for_the_same_program_and_rows_only():
    memo = FitMemo()
    memo.put(LAW, jobs(), report([1.0, 2.0]))
    assert memo.get(LAW, jobs()) is not None
    # the same syntax tree, another text: a program can read its own source, comments included
    # (an attack hunt's point), so only the exact text is the same program here
    assert memo.get(LAW + "\n# a comment: the same syntax tree\n", jobs()) is None
    assert memo.get(LAW, jobs(shift=1e-9)) is None  # other rows
    assert memo.get(LAW.replace("np.mean", "np.median"), jobs()) is None  # another program
    memo.put(LAW, jobs(shift=1.0), RunReport(Status.TIMEOUT, "slow"))
    assert memo.get(LAW, jobs(shift=1.0)) is None  # a failure is not kept: asked again, it may succeed


def test_the_memo_is_bounded_by_the_values_it_holds_oldest_first():
    memo = FitMemo(max_values=4)
    for k in range(3):
        memo.put(LAW, jobs(shift=float(k)), report([k, k]))
    assert memo.values <= 4
    assert memo.get(LAW, jobs(0.0)) is None and memo.get(LAW, jobs(2.0)) is not None


def test_the_selection_gets_the_searchs_own_fit_of_a_validation_fold():
    """What the loop relies on: scoring on validation keeps each fold's fit, and the same fit
    asked through run_remembered is answered from it, without running the program again."""
    task = load_task("sft_scaling_law")
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        scorer.memo = FitMemo()
        assert scorer.score(LAW, task, "validation").ok
        fold_jobs, _ = group_jobs(*task.validation_folds()[0])
        calls = []
        scorer.run = lambda *args, **kwargs: calls.append(args) or RunReport(Status.CRASH, "ran again")
        assert scorer.run_remembered(LAW, fold_jobs, task).status == Status.OK and calls == []
        assert scorer.memo.hits == 1
