"""The README's promises: its example program scores, and its set-up commands are the ones CI runs."""

import re
from pathlib import Path

from evolve.config import ScorerConfig
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_example_program_scores_on_sft():
    code = re.search(r"```python\n(# EVOLVE-BLOCK-START.*?# EVOLVE-BLOCK-END\n)```", README, re.S).group(1)
    with Scorer(ScorerConfig(workers=1, timeout_s=60)) as scorer:
        evaluation = scorer.score(code, load_task("sft_scaling_law"), "test")
    assert evaluation.ok, evaluation.message
    assert evaluation.metrics.r2 > 0.9 and evaluation.n_params == 3


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = commands[1].strip()
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, run = test_command.partition(" && ")
    assert run in ci and install.split()[-1].strip('"') in ci.replace('"', "")


def test_readme_own_data_commands_run_as_written(tmp_path):
    """The two own-data commands, on a CSV with the README's columns (fewer iterations)."""
    import shlex
    import subprocess
    import sys

    from tests.test_own_data import write_csv

    block = re.search(r"## Your own data.*?```bash\n(.*?)\n```", README, re.S).group(1)
    write_csv(tmp_path / "runs.csv")
    for line in block.splitlines():
        args = shlex.split(line.replace("--iterations 150", "--iterations 2"))
        assert args[0] == "evolve"
        result = subprocess.run([sys.executable, "-m", "evolve", *args[1:], *(["--quiet", "--islands", "1"] if args[1] == "run" else [])],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "archive").glob("mytask-*/best.py"))
