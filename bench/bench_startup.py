"""3. Start-up: median wall time of msgsend commands versus ``python -c "import requests"``.

``msgsend --version``, ``msgsend --help`` and ``msgsend ping`` (the sandbox already running in
another process; default output, default sqlite limiter store in a temporary directory), each
run ROUNDS times, interleaved with the baseline round by round in a rotating order. Budgets:
``--version`` <= 1.5x the baseline, ``ping`` <= 2x; ``--help`` has none and is reported.

The ``-X importtime`` breakdown of ``ping`` (largest cumulative imports) goes into the report.
"""

from __future__ import annotations

import re

from common import (
    MSGSEND,
    PYTHON,
    Row,
    SandboxProcess,
    Section,
    Workspace,
    median,
    run,
    run_standalone,
    spread,
    write_config,
)

ROUNDS = 15
BUDGETS = {"--version": 1.5, "--help": None, "ping": 2.0}


def importtime(cmd_args: list[str], ws: Workspace, top: int = 12) -> tuple[float, list[str]]:
    """Total import time (ms) of ``msgsend ARGS`` and its largest top-level imports."""
    code = (
        f"import sys; sys.argv = ['msgsend', *{cmd_args!r}]\n"
        "from msgsend.__main__ import main\n"
        "main()"
    )
    proc = run([PYTHON, "-X", "importtime", "-c", code], ws.env, check=False)
    rows = []
    total = 0
    for line in proc.err.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if match:
            total += int(match.group(1))
            if len(match.group(3)) <= 2:  # top-level and first-level imports
                rows.append((int(match.group(2)), match.group(4), len(match.group(3)) // 2))
    rows.sort(reverse=True)
    lines = [
        f"{cumulative / 1000:7.1f} ms  {'  ' * depth}{name}"
        for cumulative, name, depth in rows[:top]
    ]
    return total / 1000, lines


def bench(ws: Workspace, rounds: int = ROUNDS) -> Section:
    section = Section("startup", "3. Start-up")
    with SandboxProcess(ws.env, latency_ms=0.0, kakaotalk_limit=None, sms_limit=None) as sandbox:
        config = write_config(
            ws.path("config.toml"), sandbox, store="sqlite", sqlite_path=ws.path("limiter.sqlite")
        )
        commands = {
            "baseline": [PYTHON, "-c", "import requests"],
            "--version": [MSGSEND, "--version"],
            "--help": [MSGSEND, "--help"],
            "ping": [MSGSEND, "ping", "--config", str(config)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for name in names:  # warm-up: bytecode, page cache
            run(commands[name], ws.env)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                times[name].append(run(commands[name], ws.env).wall)
        ping_total, ping_imports = importtime(["ping", "--config", str(config)], ws)
        version_total, _ = importtime(["--version"], ws)
    base = median(times["baseline"])
    for name, budget in BUDGETS.items():
        ratio = median(times[name]) / base
        section.rows.append(
            Row(
                name=f"`msgsend {name}`" + (" (sandbox running)" if name == "ping" else ""),
                baseline=f"{base * 1000:.0f} ms",
                msgsend=f"{median(times[name]) * 1000:.0f} ms",
                ratio=ratio,
                budget=f"≤ {budget}x" if budget else "(none)",
                met=None if budget is None else ratio <= budget,
            )
        )
    for name in commands:
        label = 'python -c "import requests"' if name == "baseline" else f"msgsend {name}"
        section.details.append(f"- `{label}`: seconds {spread(times[name])}")
    section.details.append(
        f"- `python -X importtime`: imports take {version_total:.0f} ms of `msgsend --version` "
        f"and {ping_total:.0f} ms of `msgsend ping`; the largest in `ping`:"
    )
    section.details.append("\n```\n" + "\n".join(ping_imports) + "\n```")
    section.raw = times
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, ROUNDS, flag="--rounds")
