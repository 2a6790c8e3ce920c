"""The ``msgsend`` console script and ``python -m msgsend``.

``msgsend --version`` is answered here, before the command line is imported: typer, click
and the commands are most of a process's start-up (0.15 s of CPU for ``--version`` through
``msgsend.cli``; here about the interpreter's own 0.02 s, docs/benchmarks.md, 3b).
"""

from __future__ import annotations

import sys

from . import __version__


def main() -> None:
    """Run the command line, e.g. ``msgsend send 010-1234-5678 "hi"``."""
    if sys.argv[1:] == ["--version"]:
        try:
            sys.stdout.write(f"msgsend {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader left first (`msgsend --version | true`): no failure of msgsend's (as
            # for every command: cli._write_stdout), no traceback, and the interpreter's own
            # flush at exit goes to /dev/null instead of failing again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    from .cli import main as run_command_line

    run_command_line()


if __name__ == "__main__":
    main()
