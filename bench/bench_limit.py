"""2. Utilisation when the limit binds.

200 SMS rows at ``requests-per-second = 20`` (sliding window, msgsend's default strategy),
against a sandbox whose own SMS limit is the same 20 per 1 s window: any overshoot by msgsend
shows up as a 429. The ideal schedule of a sliding window sends 20 at once and 20 more each
second, so the last request goes ``ceil(200 / 20) - 1 = 9`` windows after the first. Elapsed
is measured by the sandbox, from the arrival of the first request to the arrival of the last
(so start-up is not part of it); utilisation = ideal / elapsed. Budget: >= 0.95, zero 429s.

Three set-ups, each repeated: one process with the memory store, one with the sqlite store
(the default), and two processes of 100 rows each sharing one sqlite file (two cron jobs on a
host). Each run gets a fresh sqlite file, so no run inherits another's window.
"""

from __future__ import annotations

import math

from common import (
    MSGSEND,
    Row,
    SandboxProcess,
    Section,
    Workspace,
    make_simple_csv,
    median,
    run,
    run_many,
    run_standalone,
    spread,
    write_config,
)

ROWS = 200
LIMIT = 20
WINDOWS = math.ceil(ROWS / LIMIT) - 1
IDEAL = WINDOWS * 1.0
BUDGET = 0.95


def bench(ws: Workspace, reps: int = 3) -> Section:
    section = Section("limit", "2. Utilisation when the limit binds")
    whole = make_simple_csv(ws.path("rows.csv"), ROWS)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    halves = []
    for index in range(2):  # rows 0, 2, 4, ... and 1, 3, 5, ...: distinct numbers either way
        half = ws.path(f"half{index}.csv")
        half.write_text(lines[0] + "".join(lines[1 + index :: 2]), encoding="utf-8")
        halves.append(half)

    results: dict[str, list[dict[str, float]]] = {"memory": [], "sqlite": [], "two processes": []}
    with SandboxProcess(
        ws.env, latency_ms=20.0, kakaotalk_limit=None, sms_limit=LIMIT, period=1.0
    ) as sandbox:

        def config(store: str) -> str:
            path = write_config(
                ws.path(f"{store}.toml"),
                sandbox,
                sms_rps=LIMIT,
                store=store,
                sqlite_path=ws.path("limiter.sqlite"),
                concurrency=16,
            )
            return str(path)

        def bulk(path: object, cfg: str) -> list[str]:
            return [
                MSGSEND,
                "bulk",
                str(path),
                "--via",
                "sms",
                "--config",
                cfg,
                "--json",
                "--results",
                str(ws.path("results.csv")),
            ]

        for _ in range(reps):
            for kind in results:
                sandbox.reset()
                if kind == "two processes":
                    cfg = config("sqlite")
                    _, procs = run_many([bulk(halves[0], cfg), bulk(halves[1], cfg)], ws.env)
                    sent = sum(p.json()["sent"] for p in procs)
                else:
                    sent = run(bulk(whole, config(kind)), ws.env).json()["sent"]
                seen = sandbox.stats()["sms"]
                elapsed = seen["last"] - seen["first"]
                results[kind].append(
                    {
                        "elapsed": elapsed,
                        "utilisation": IDEAL / elapsed,
                        "429": seen["status"].get("429", 0),
                        "sent": sent,
                    }
                )

    for kind, runs in results.items():
        utilisation = [r["utilisation"] for r in runs]
        throttled = sum(r["429"] for r in runs)
        sent_ok = all(r["sent"] == ROWS for r in runs)
        where = {
            "memory": "1 process, memory store",
            "sqlite": "1 process, sqlite store",
            "two processes": "2 processes x 100 rows, one sqlite store",
        }[kind]
        section.rows.append(
            Row(
                name=f"200 SMS at 20/s, {where}",
                baseline=f"{IDEAL:.2f} s ideal",
                msgsend=f"{median([r['elapsed'] for r in runs]):.2f} s, {throttled} x 429",
                ratio=median(utilisation),
                budget=f"≥ {BUDGET}, 0 x 429",
                met=median(utilisation) >= BUDGET and throttled == 0 and sent_ok,
            )
        )
        section.details.append(
            f"- {where}: first-to-last request {spread([r['elapsed'] for r in runs])} s, "
            f"utilisation {spread(utilisation)}, 429s per run {[int(r['429']) for r in runs]}"
        )
    section.raw = results
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 3)
