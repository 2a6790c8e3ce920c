"""1. Throughput when the limit does not bind.

``msgsend bulk`` of 1,000 KakaoTalk rows with ``--concurrency 16`` against the sandbox
(20 ms latency, its limits off; msgsend's limits 100,000/s, so they never bind), versus the
bare loop (``bench/bare_loop.py``: requests.Session + ThreadPoolExecutor(16), same bodies, same
server). Both are timed as whole processes, interpreter start-up and imports included: rows /
wall time. Runs are interleaved (baseline, msgsend with each store) and repeated; the table
shows medians. Budget: msgsend >= 0.9 x the bare loop's throughput.

The loop-only time of the bare loop (no start-up) is reported too, as the stricter reference.
"""

from __future__ import annotations

from common import (
    BENCH_DIR,
    MSGSEND,
    PYTHON,
    Row,
    SandboxProcess,
    Section,
    Workspace,
    make_simple_csv,
    median,
    run,
    run_standalone,
    spread,
    write_config,
)

ROWS = 1000
CONCURRENCY = 16
LATENCY_MS = 20.0
BUDGET = 0.9


def bench(ws: Workspace, reps: int = 5) -> Section:
    section = Section("throughput", "1. Throughput when the limit does not bind")
    data = make_simple_csv(ws.path("rows.csv"), ROWS)
    walls: dict[str, list[float]] = {"bare": [], "bare-loop": [], "sqlite": [], "memory": []}
    cpu: dict[str, list[float]] = {"bare": [], "sqlite": [], "memory": []}
    with SandboxProcess(ws.env, latency_ms=LATENCY_MS) as sandbox:
        configs = {
            "sqlite": write_config(
                ws.path("sqlite.toml"),
                sandbox,
                store="sqlite",
                sqlite_path=ws.path("limiter.sqlite"),
                concurrency=CONCURRENCY,
            ),
            "memory": write_config(
                ws.path("memory.toml"), sandbox, store="memory", concurrency=CONCURRENCY
            ),
        }

        def one(kind: str) -> None:
            sandbox.reset()
            if kind == "bare":
                proc = run(
                    [
                        PYTHON,
                        str(BENCH_DIR / "bare_loop.py"),
                        sandbox.url("kakaotalk"),
                        str(data),
                        "--concurrency",
                        str(CONCURRENCY),
                    ],
                    ws.env,
                )
                report = proc.json()
                assert report["ok"] == ROWS, report
                loop = report["loop_s"]
            else:
                proc = run(
                    [
                        MSGSEND,
                        "bulk",
                        str(data),
                        "--config",
                        str(configs[kind]),
                        "--concurrency",
                        str(CONCURRENCY),
                        "--json",
                        "--results",
                        str(ws.path(f"{kind}.results.csv")),
                    ],
                    ws.env,
                )
                report = proc.json()
                assert report["sent"] == ROWS, report
                loop = None
            seen = sandbox.stats()["kakaotalk"]
            assert seen["status"] == {"200": ROWS}, seen
            if record:
                walls[kind].append(proc.wall)
                cpu[kind].append(proc.cpu)
                if loop is not None:
                    walls["bare-loop"].append(loop)

        kinds = ["bare", "sqlite", "memory"]
        record = False
        for kind in kinds:  # warm-up: page cache, bytecode, the server's first connections
            one(kind)
        record = True
        for rep in range(reps):
            order = kinds[rep % 3 :] + kinds[: rep % 3]  # rotate, so no kind always goes first
            for kind in order:
                one(kind)

    bare = median(walls["bare"])
    for kind in ("sqlite", "memory"):
        ratio = bare / median(walls[kind])
        default = " (the default store)" if kind == "sqlite" else ""
        section.rows.append(
            Row(
                name=f"bulk 1,000 rows, c=16, 20 ms, limit not binding, {kind} store{default}",
                baseline=f"{ROWS / bare:.0f} rows/s",
                msgsend=f"{ROWS / median(walls[kind]):.0f} rows/s",
                ratio=ratio,
                budget=f"≥ {BUDGET}",
                met=ratio >= BUDGET,
            )
        )
    loop = median(walls["bare-loop"])
    strict = loop / median(walls["sqlite"])
    section.rows.append(
        Row(
            name="same, against the bare loop's loop alone (no start-up), sqlite store",
            baseline=f"{ROWS / loop:.0f} rows/s",
            msgsend=f"{ROWS / median(walls['sqlite']):.0f} rows/s",
            ratio=strict,
            budget="(reference)",
            met=None,
        )
    )
    section.details += [
        f"- wall seconds, bare loop process: {spread(walls['bare'])}; its loop alone: "
        f"{spread(walls['bare-loop'])}",
        f"- wall seconds, `msgsend bulk` (sqlite store): {spread(walls['sqlite'])}",
        f"- wall seconds, `msgsend bulk` (memory store): {spread(walls['memory'])}",
        f"- client process CPU seconds (user + system): bare loop {spread(cpu['bare'])}, "
        f"msgsend sqlite store {spread(cpu['sqlite'])}, memory store {spread(cpu['memory'])}",
        f"- ideal at 16 in flight x 20 ms: {ROWS / CONCURRENCY * LATENCY_MS / 1000:.2f} s of "
        "waiting; the rest is CPU on 2 cores shared by client and server",
    ]
    section.raw = walls
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 5)
