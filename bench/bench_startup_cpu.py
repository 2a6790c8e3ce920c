"""3b. Start-up CPU: the CPU time (user + system) of one msgsend process, per command.

What a process costs the machine it runs on: cron and operators start one ``msgsend send``
per message, monitoring one ``msgsend ping`` every few seconds, and the test suite ~25
processes per run on a loaded two-core machine, where CPU-seconds are what count. Each command
runs ROUNDS times as the installed console script, interleaved round by round in a rotating
order with two baselines: ``python -c pass`` (the interpreter) and ``python -c "import typer"``
(the command-line framework every command but ``--version`` needs). The table gives each
command against the second (``--version`` against the first); the details give both. The
commands: ``--version``, ``--help``, ``send --help``, ``ping`` (the sandbox running in another
process, the default sqlite limiter store), ``send --sandbox --json`` (fake providers started
in-process), ``bulk --dry-run`` of a one-row file and ``config show``; stdout and stderr are
files, not a terminal, as under cron. Budgets: ``--version`` <= 2.5x the interpreter (the
console script pip writes imports ``re`` before msgsend runs, ~0.013 s of the ~0.035 s);
``ping`` and ``send --sandbox --json`` <= 3.5x, ``bulk --dry-run`` <= 3x the typer import; the
others are reported.

The ``-X importtime`` breakdown of ``send --sandbox --json`` (largest cumulative imports)
goes into the report.
"""

from __future__ import annotations

from bench_startup import importtime
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

ROUNDS = 9
#: command -> (baseline it is compared with in the table, budget as a ratio or None)
BUDGETS: dict[str, tuple[str, float | None]] = {
    "--version": ("python", 2.5),
    "--help": ("typer", None),
    "send --help": ("typer", None),
    "ping": ("typer", 3.5),
    "send --sandbox --json": ("typer", 3.5),
    "bulk --dry-run": ("typer", 3.0),
    "config show": ("typer", None),
}
BASELINES = {"python": 'python -c "pass"', "typer": 'python -c "import typer"'}


def bench(ws: Workspace, rounds: int = ROUNDS) -> Section:
    section = Section("startup-cpu", "3b. Start-up CPU per command")
    csv = ws.path("one-row.csv")
    csv.write_text("phone,message\n010-1234-5678,hi\n", encoding="utf-8")
    with SandboxProcess(ws.env, latency_ms=0.0, kakaotalk_limit=None, sms_limit=None) as sandbox:
        config = str(
            write_config(
                ws.path("config.toml"),
                sandbox,
                store="sqlite",
                sqlite_path=ws.path("limiter.sqlite"),
            )
        )
        args = {
            "--version": ["--version"],
            "--help": ["--help"],
            "send --help": ["send", "--help"],
            "ping": ["ping", "--config", config],
            "send --sandbox --json": [
                *("send", "010-1234-5678", "hi", "--sandbox", "--json", "--config", config)
            ],
            "bulk --dry-run": ["bulk", str(csv), "--dry-run", "--config", config],
            "config show": ["config", "show", "--config", config],
        }
        commands = {
            "python": [PYTHON, "-c", "pass"],
            "typer": [PYTHON, "-c", "import typer"],
            **{name: [MSGSEND, *argv] for name, argv in args.items()},
        }
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for name in names:  # warm-up: page cache, and a command that fails stops the run here
            run(commands[name], ws.env, cwd=ws.dir)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                cpu[name].append(run(commands[name], ws.env, cwd=ws.dir).cpu)
        send_total, send_imports = importtime(args["send --sandbox --json"], ws)
    base = {name: median(cpu[name]) for name in BASELINES}
    for name, (against, budget) in BUDGETS.items():
        ratio = median(cpu[name]) / base[against]
        section.rows.append(
            Row(
                name=f"`msgsend {name}` CPU",
                baseline=f"{base[against] * 1000:.0f} ms ({against})",
                msgsend=f"{median(cpu[name]) * 1000:.0f} ms",
                ratio=ratio,
                budget=f"≤ {budget}x" if budget else "(none)",
                met=None if budget is None else ratio <= budget,
            )
        )
    for name, label in BASELINES.items():
        section.details.append(f"- `{label}`: CPU seconds {spread(cpu[name])}")
    for name in BUDGETS:
        section.details.append(
            f"- `msgsend {name}`: CPU seconds {spread(cpu[name])}; "
            f"{median(cpu[name]) / base['python']:.1f}x the interpreter, "
            f"{median(cpu[name]) / base['typer']:.2f}x the typer import"
        )
    section.details.append(
        f"- `python -X importtime`: imports take {send_total:.0f} ms of "
        "`msgsend send --sandbox --json`; the largest:"
    )
    section.details.append("\n```\n" + "\n".join(send_imports) + "\n```")
    section.raw = cpu
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, ROUNDS, flag="--rounds")
