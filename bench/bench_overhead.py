"""6. Per-message overhead: the client's CPU time per message.

The CPU time (user + system, from the kernel's rusage of the child) of ``msgsend bulk`` on
SMALL and LARGE rows; the difference divided by LARGE - SMALL is the marginal CPU cost of one
message, start-up excluded. The same for the bare loop (``bench/bare_loop.py``) gives the cost
of the HTTP request alone with requests. Limits not binding, sqlite store (the default),
concurrency 16, sandbox latency 20 ms. The profile that explains the difference is
``bench/profile_client.py``; its summary is added to the report.
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

SMALL = 100
LARGE = 2100
CONCURRENCY = 16


def bench(ws: Workspace, reps: int = 3) -> Section:
    section = Section("overhead", "6. Per-message overhead")
    files = {n: make_simple_csv(ws.path(f"rows{n}.csv"), n) for n in (SMALL, LARGE)}
    cpu: dict[tuple[str, int], list[float]] = {}
    with SandboxProcess(ws.env, latency_ms=20.0) as sandbox:
        config = write_config(
            ws.path("sqlite.toml"),
            sandbox,
            store="sqlite",
            sqlite_path=ws.path("limiter.sqlite"),
            concurrency=CONCURRENCY,
        )

        def one(kind: str, n: int) -> float:
            if kind == "bare":
                proc = run(
                    [
                        PYTHON,
                        str(BENCH_DIR / "bare_loop.py"),
                        sandbox.url("kakaotalk"),
                        str(files[n]),
                        "--concurrency",
                        str(CONCURRENCY),
                    ],
                    ws.env,
                )
                assert proc.json()["ok"] == n
            else:
                proc = run(
                    [
                        MSGSEND,
                        "bulk",
                        str(files[n]),
                        "--config",
                        str(config),
                        "--json",
                        "--results",
                        str(ws.path("results.csv")),
                    ],
                    ws.env,
                )
                assert proc.json()["sent"] == n
            return proc.cpu

        one("bare", SMALL)
        one("msgsend", SMALL)  # warm-up
        for _ in range(reps):
            for kind in ("bare", "msgsend"):
                for n in (SMALL, LARGE):
                    cpu.setdefault((kind, n), []).append(one(kind, n))

    per = {
        kind: (median(cpu[(kind, LARGE)]) - median(cpu[(kind, SMALL)])) / (LARGE - SMALL)
        for kind in ("bare", "msgsend")
    }
    section.rows.append(
        Row(
            name="client CPU per message (marginal, start-up excluded), sqlite store",
            baseline=f"{per['bare'] * 1e6:.0f} µs",
            msgsend=f"{per['msgsend'] * 1e6:.0f} µs",
            ratio=per["msgsend"] / per["bare"],
            budget="(no budget: see 1)",
            met=None,
        )
    )
    for kind in ("bare", "msgsend"):
        section.details.append(
            f"- {kind}: process CPU seconds for {SMALL} rows {spread(cpu[(kind, SMALL)])}, "
            f"for {LARGE} rows {spread(cpu[(kind, LARGE)])}"
        )
    section.raw = {f"{k}-{n}": v for (k, n), v in cpu.items()} | {"per_message": per}
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 3)
