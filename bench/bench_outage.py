"""5. Outage cost: 500 KakaoTalk rows while KakaoTalk answers 503 and SMS is healthy.

``msgsend bulk`` of 500 rows with KakaoTalk down (the sandbox answers 503 to every KakaoTalk
request) and fallback on, versus the same rows sent straight to SMS (``--via sms``), same
config, same sandbox. Both are whole-process wall times (start-up included), interleaved and
repeated. Budget: outage <= 1.3 x straight to SMS.

Limits: the sandbox's limits are off and msgsend's are 100,000/s, so neither run is paced by a
limit. That is the strict case: with a binding SMS limit both runs would take the time the
limit sets (500 SMS either way; KakaoTalk's failures do not spend the SMS budget) and the
ratio would read ~1.0 whatever the outage cost. Without it, every second the outage wastes
(retry waits, requests to the dead provider) shows. Retry, fallback and circuit-breaker
settings are the defaults (3 attempts, 1 s then 2 s backoff; the circuit opens when 10 of
the last 20 messages failed, for 30 s: at concurrency 16 the first messages in flight open it).
"""

from __future__ import annotations

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

ROWS = 500
BUDGET = 1.3


def bench(ws: Workspace, reps: int = 5) -> Section:
    section = Section("outage", "5. Outage cost")
    data = make_simple_csv(ws.path("rows.csv"), ROWS)
    walls: dict[str, list[float]] = {"outage": [], "sms": []}
    cpu: dict[str, list[float]] = {"outage": [], "sms": []}
    kakaotalk_requests: list[int] = []
    fallbacks: list[int] = []
    with SandboxProcess(ws.env, latency_ms=20.0, kakaotalk_down=True) as sandbox:
        config = write_config(
            ws.path("config.toml"),
            sandbox,
            store="sqlite",
            sqlite_path=ws.path("limiter.sqlite"),
            concurrency=16,
        )

        def one(kind: str, record: bool) -> None:
            sandbox.reset()
            extra = ["--via", "sms"] if kind == "sms" else []
            proc = run(
                [
                    MSGSEND,
                    "bulk",
                    str(data),
                    "--config",
                    str(config),
                    "--json",
                    "--results",
                    str(ws.path("results.csv")),
                    *extra,
                ],
                ws.env,
            )
            report = proc.json()
            assert report["sent"] == ROWS, report
            seen = sandbox.stats()
            assert seen["sms"]["status"] == {"200": ROWS}, seen
            if record:
                walls[kind].append(proc.wall)
                cpu[kind].append(proc.cpu)
                if kind == "outage":
                    kakaotalk_requests.append(seen["kakaotalk"]["total"])
                    fallbacks.append(report["fallbacks"])

        one("sms", False)
        one("outage", False)  # warm-up
        for rep in range(reps):
            for kind in ("outage", "sms") if rep % 2 else ("sms", "outage"):
                one(kind, True)

    ratio = median(walls["outage"]) / median(walls["sms"])
    section.rows.append(
        Row(
            name="500 rows, KakaoTalk answering 503, SMS healthy, limits not binding",
            baseline=f"{median(walls['sms']):.2f} s straight to SMS",
            msgsend=f"{median(walls['outage']):.2f} s with fallback",
            ratio=ratio,
            budget=f"≤ {BUDGET}x",
            met=ratio <= BUDGET,
        )
    )
    section.details += [
        f"- wall seconds, straight to SMS: {spread(walls['sms'])}",
        f"- wall seconds, KakaoTalk down, fallback to SMS: {spread(walls['outage'])}",
        f"- client CPU seconds, straight to SMS: {spread(cpu['sms'])}; with the outage: "
        f"{spread(cpu['outage'])}",
        f"- requests that reached the dead KakaoTalk per run: {kakaotalk_requests} "
        f"(of {ROWS} messages; the circuit opened after the first failures); fallbacks per "
        f"run: {fallbacks}",
    ]
    section.raw = {"walls": walls, "cpu": cpu, "kakaotalk_requests": kakaotalk_requests}
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 5)
