"""7. Overflow: a KakaoTalk campaign against the sum of both budgets.

300 KakaoTalk rows with KakaoTalk limited to 10/s and SMS to 20/s (sliding windows of 1 s),
against a sandbox that enforces the same limits (any overshoot is a 429). With ``--overflow``
a row goes by SMS whenever only SMS's budget has a free slot, so the campaign should take
what both budgets together allow: the ideal sends 30 at once and 30 more each second, the last
request ``ceil(300 / 30) - 1 = 9`` windows after the first, i.e. N / (sum of the budgets).
Elapsed is measured by the sandbox, from the first request's arrival at either provider to
the last's (start-up excluded); utilisation = ideal / elapsed. Budget: >= 0.9, zero 429s.

For reference, the same campaign without ``--overflow`` (KakaoTalk's budget alone: ideal
``ceil(300 / 10) - 1 = 29`` s), interleaved with the overflow runs; the speed-up is the ratio
of the two elapsed times (ideal: 30 / 10 = 3, less the first window both spend at once).
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
    run_standalone,
    spread,
    write_config,
)

ROWS = 300
KAKAOTALK = 10
SMS = 20
IDEAL = (math.ceil(ROWS / (KAKAOTALK + SMS)) - 1) * 1.0
IDEAL_ALONE = (math.ceil(ROWS / KAKAOTALK) - 1) * 1.0
BUDGET = 0.9


def bench(ws: Workspace, reps: int = 2) -> Section:
    section = Section("overflow", "7. Overflow")
    data = make_simple_csv(ws.path("rows.csv"), ROWS)
    runs: dict[str, list[dict[str, float]]] = {"overflow": [], "kakaotalk only": []}
    with SandboxProcess(
        ws.env, latency_ms=20.0, kakaotalk_limit=KAKAOTALK, sms_limit=SMS, period=1.0
    ) as sandbox:
        config = write_config(
            ws.path("config.toml"),
            sandbox,
            kakaotalk_rps=KAKAOTALK,
            sms_rps=SMS,
            store="memory",
            concurrency=16,
        )

        def one(kind: str) -> None:
            sandbox.reset()
            results = ws.path("results.csv")
            results.unlink(missing_ok=True)
            extra = ["--overflow"] if kind == "overflow" else []
            command = [MSGSEND, "bulk", str(data), "--config", str(config), "--json"]
            report = run([*command, "--results", str(results), *extra], ws.env).json()
            assert report["sent"] == ROWS, report
            seen = sandbox.stats()
            arrivals = [p for p in (seen["kakaotalk"], seen["sms"]) if p["first"] is not None]
            elapsed = max(p["last"] for p in arrivals) - min(p["first"] for p in arrivals)
            runs[kind].append(
                {
                    "elapsed": elapsed,
                    "429": sum(p["status"].get("429", 0) for p in arrivals),
                    "sms": seen["sms"]["total"],
                    "overflows": report.get("overflows", 0),
                }
            )

        for rep in range(reps):
            for kind in (
                ("overflow", "kakaotalk only") if rep % 2 else ("kakaotalk only", "overflow")
            ):
                one(kind)

    spill = runs["overflow"]
    alone = runs["kakaotalk only"]
    utilisation = [IDEAL / r["elapsed"] for r in spill]
    throttled = sum(r["429"] for r in spill)
    section.rows.append(
        Row(
            name=f"{ROWS} KakaoTalk rows, KakaoTalk {KAKAOTALK}/s + SMS {SMS}/s, --overflow",
            baseline=f"{IDEAL:.2f} s ideal (N / sum of budgets)",
            msgsend=f"{median([r['elapsed'] for r in spill]):.2f} s, {throttled} x 429",
            ratio=median(utilisation),
            budget=f"≥ {BUDGET}, 0 x 429",
            met=median(utilisation) >= BUDGET and throttled == 0,
        )
    )
    speedup = median([r["elapsed"] for r in alone]) / median([r["elapsed"] for r in spill])
    section.rows.append(
        Row(
            name="same rows without --overflow (KakaoTalk's budget alone), elapsed / overflow's",
            baseline=f"{IDEAL_ALONE:.2f} s ideal alone",
            msgsend=f"{median([r['elapsed'] for r in alone]):.2f} s",
            ratio=speedup,
            budget="(reference)",
            met=None,
        )
    )
    section.details += [
        f"- with --overflow: first-to-last request {spread([r['elapsed'] for r in spill])} s, "
        f"utilisation {spread(utilisation)}; rows by SMS per run {[int(r['sms']) for r in spill]} "
        f"(overflows reported {[int(r['overflows']) for r in spill]})",
        f"- KakaoTalk alone: first-to-last request {spread([r['elapsed'] for r in alone])} s "
        f"(ideal {IDEAL_ALONE:.0f} s); speed-up with overflow {speedup:.2f}x",
        f"- 429s per run: overflow {[int(r['429']) for r in spill]}, alone "
        f"{[int(r['429']) for r in alone]}",
    ]
    section.raw = runs
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 2)
