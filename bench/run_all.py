"""Run every msgsend benchmark and write the table to docs/benchmarks.md.

    python bench/run_all.py                  # everything, about 5 minutes; writes the doc
    python bench/run_all.py --only startup,memory --no-write
    python bench/run_all.py --quick          # fewer repetitions, for trying changes

Each benchmark measures msgsend and its baseline side by side, interleaved, in this one run,
and reports their ratio: the machine is shared and noisy, so absolute timings are never a
pass/fail criterion (and nothing here is a test). msgsend runs as the installed console
script against fake providers (``bench/sandbox_server.py``) in a separate process, on
127.0.0.1, with every file in a temporary directory. Exit status: 0 when every budget is met,
1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time

import bench_formats
import bench_limit
import bench_memory
import bench_outage
import bench_overflow
import bench_overhead
import bench_resume
import bench_startup
import bench_startup_cpu
import bench_throughput
from common import BENCH_DIR, PYTHON, REPO, Section, Workspace, machine, precompile

#: (key, module, full repetitions, quick repetitions), in the order of the issue
BENCHMARKS = (
    ("throughput", bench_throughput, 5, 2),
    ("limit", bench_limit, 1, 1),
    ("startup", bench_startup, 15, 5),
    ("startup-cpu", bench_startup_cpu, 9, 3),
    ("memory", bench_memory, 3, 1),
    ("outage", bench_outage, 5, 2),
    ("overhead", bench_overhead, 3, 1),
    ("overflow", bench_overflow, 2, 1),
    ("resume", bench_resume, 2, 1),
    ("formats", bench_formats, 15, 5),
)
DOC = REPO / "docs" / "benchmarks.md"
NARRATIVE = BENCH_DIR / "narrative.md"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _met(value: bool | None) -> str:
    return "—" if value is None else ("**met**" if value else "**NOT met**")


def table(sections: list[Section]) -> str:
    lines = [
        "| # | benchmark | baseline | msgsend | ratio | budget | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for section in sections:
        number = section.title.split(".", 1)[0]
        for row in section.rows:
            lines.append(
                f"| {number} | {row.name} | {row.baseline} | {row.msgsend} | "
                f"{_ratio(row.ratio)} | {row.budget} | {_met(row.met)} |"
            )
    return "\n".join(lines)


def profile_summary(rows: int) -> str:
    """cProfile of the client in a child process (bench/profile_client.py)."""
    proc = subprocess.run(
        [PYTHON, str(BENCH_DIR / "profile_client.py"), "--rows", str(rows), "--top", "15"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCH_DIR,
    )
    if proc.returncode != 0:
        return f"(profile failed: {proc.stderr[-500:]})"
    return proc.stdout.rstrip()


def render(
    sections: list[Section], info: dict[str, str], started: float, profile: str, command: str
) -> str:
    took = time.monotonic() - started
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "msgsend exists to push messages as fast as the providers allow and no faster, and to",
        "answer a health check in the time a shell script expects. These benchmarks measure",
        "that against a baseline run side by side, so the ratios hold on a noisy machine.",
        "",
        "Run them all (about 5 minutes; writes this file):",
        "",
        "```sh",
        "python3 bench/run_all.py",
        "```",
        "",
        f"This run: `{command}`, {when}, {took / 60:.1f} minutes.",
        "",
        "## Results",
        "",
        table(sections),
        "",
        "Ratios are msgsend / baseline for throughput and utilisation (higher is better) and",
        "for time and memory (lower is better); each is computed from the medians of runs",
        "interleaved with their baseline. The rest of this page says how each was measured.",
        "",
        "## Machine",
        "",
        *[f"- {name}: {value}" for name, value in info.items() if value],
        "",
        "A shared 2-core machine: the client, the fake providers and whatever else runs there",
        "compete for the same two cores, which is why only ratios are compared.",
        "",
    ]
    for section in sections:
        module = {key: mod for key, mod, _, _ in BENCHMARKS}[section.key]
        doc = (module.__doc__ or "").strip().split("\n\n")
        out += [f"## {section.title}", "", *"\n\n".join(doc[1:]).splitlines(), ""]
        out += ["Measured:", "", *section.details, ""]
        if section.key == "overhead" and profile:
            out += [
                "Profile (`python3 bench/profile_client.py`: cProfile of every client thread, "
                "one worker, sandbox without latency, so only the client's own work is seen):",
                "",
                "```",
                profile,
                "```",
                "",
            ]
    if NARRATIVE.exists():
        out += [NARRATIVE.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: " + ",".join(k for k, *_ in BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--profile-rows", type=int, default=2000)
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {k for k, *_ in BENCHMARKS}
    unknown = chosen - {k for k, *_ in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    info = machine()
    precompile()
    sections: list[Section] = []
    profile = ""
    with Workspace() as ws:
        for key, module, full, quick in BENCHMARKS:
            if key not in chosen:
                continue
            print(f"== {key} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            section = module.bench(ws, quick if args.quick else full)
            sections.append(section)
            for row in section.rows:
                print(
                    f"   {row.name}: {row.baseline} vs {row.msgsend}, ratio "
                    f"{_ratio(row.ratio)} (budget {row.budget}) {_met(row.met)}",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"   ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    if "overhead" in chosen:
        print("== profile ...", file=sys.stderr, flush=True)
        profile = profile_summary(args.profile_rows // (4 if args.quick else 1))
    load = info.pop("load", "")
    info["load average (1, 5, 15 min) at start"] = load
    info["load average at end"] = machine()["load"]
    command = "python3 bench/run_all.py" + "".join(
        f" {arg}" for arg in sys.argv[1:] if arg != "--no-write"
    )
    text = render(sections, info, started, profile, command)
    print(table(sections))
    if not args.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)
    met = [row.met for section in sections for row in section.rows if row.met is not None]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
