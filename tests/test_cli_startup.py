"""Every `evolve` command starts without importing the model client's HTTP library: `openai`
alone took 2.5 of 4.2 s to import on a loaded machine, paid by `evolve --version`,
`evolve tasks` and every offline run. It loads when a model client is made."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_starts_without_importing_openai():
    probe = "import sys, evolve.cli.main; print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
