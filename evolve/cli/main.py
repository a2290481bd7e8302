"""The `evolve` command: one click group; each command group lives in its own module.

Every user error (unknown task, malformed CSV or config, broken program, unreachable
endpoint, unknown run) ends as one line on stderr and exit code 2; nothing stored in an
archive is touched by a failed command; a closed pipe (`evolve tasks --json | head`) is a
quiet exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from evolve import __version__
from evolve.cli.archive_cmd import archive_group, report_command, runs_command
from evolve.cli.eval_cmd import eval_command
from evolve.cli.run_cmd import run_command
from evolve.cli.sweep_cmd import sweep_command
from evolve.cli.tasks_cmd import tasks_command
from evolve.cli.use_cmd import optimize_command, predict_command
from evolve.api import LawError
from evolve.config import ConfigError
from evolve.loop import RunError
from evolve.program import ProgramError
from evolve.propose.client import LLMError
from evolve.propose.seeds import SeedError
from evolve.store.errors import ArchiveError
from evolve.store.rundir import DATABASE_NAME
from evolve.tasks import TaskError
from evolve.text import one_line, safe_text

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL_ERROR = 3  # a fault of evolve itself (not the input): please report it
USER_ERRORS = (LawError, TaskError, ConfigError, ProgramError, ArchiveError, LLMError, RunError, SeedError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="evolve")
def cli() -> None:
    """Discover scaling laws by evolving programs."""


for command in (tasks_command, eval_command, run_command, runs_command, archive_group, report_command, predict_command, optimize_command, sweep_command):
    cli.add_command(command)


def error(text: str) -> int:
    print(f"evolve: error: {safe_text(one_line(text), keep_newlines=False)}", file=sys.stderr)
    return EXIT_USER_ERROR


def tolerant_streams() -> None:
    """Output the locale cannot encode (an R², a dash, a program's text under
    PYTHONIOENCODING=ascii:strict or LC_ALL=C) is replaced, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError, OSError):
            pass


def interrupted_message(run_dir: str | None) -> str:
    """What a Ctrl-C leaves: a run to resume only where one was stored (a Ctrl-C before a
    run's archive exists, or in another command, leaves nothing to resume)."""
    if run_dir and (Path(run_dir) / DATABASE_NAME).is_file():
        return f"interrupted; resume with `evolve run --resume {run_dir}`"
    return "interrupted" + ("; nothing of the run was stored" if run_dir else "")


def main(argv: list[str] | None = None) -> int:
    tolerant_streams()
    try:
        result = cli.main(args=argv, prog_name="evolve", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        return error(exc.format_message())
    except USER_ERRORS as exc:
        return error(str(exc).strip() or type(exc).__name__)
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:
        print(f"evolve: {interrupted_message(getattr(exc, 'run_dir', None))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        quiet_closed_stdout()
        return 0
    except OSError as exc:
        return error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a fault of evolve's own: one line, the traceback on request
        if os.environ.get("EVOLVE_TRACEBACK"):
            raise
        print(f"evolve: internal error: {safe_text(one_line(f'{type(exc).__name__}: {exc}'), keep_newlines=False)[:500]} "
              "(a bug in evolve: EVOLVE_TRACEBACK=1 shows where)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    return result if isinstance(result, int) else 0


def quiet_closed_stdout() -> None:
    """The reader went away (`| head`): point stdout at /dev/null so exit flushes nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
