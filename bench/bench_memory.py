"""4. Memory: peak RSS of ``msgsend bulk --dry-run`` on 20,000 and 200,000 rows, and the rate.

A realistic file (``common.make_mixed_csv``: numbers with and without hyphens and with +82, a
``via`` column sending 30% by SMS, 1% landlines (invalid), 1% repeated rows (duplicates)),
rendered through ``--template``. Peak RSS is the child's ``ru_maxrss`` from ``wait4``; the
rate is rows / wall time of the whole command on the large file (start-up included, so it is a
floor). Budget: the 200,000-row peak <= 1.3 x the 20,000-row peak (memory does not grow with
the file).
"""

from __future__ import annotations

from common import (
    MSGSEND,
    Row,
    Section,
    Workspace,
    make_mixed_csv,
    median,
    run,
    run_standalone,
    spread,
    write_config,
)

SMALL = 20_000
LARGE = 200_000
BUDGET = 1.3
TEMPLATE = "{name}님, 주문 {order_no} 상품이 발송되었습니다."


def bench(ws: Workspace, reps: int = 3) -> Section:
    section = Section("memory", "4. Memory and validation rate (`bulk --dry-run`)")
    files = {n: make_mixed_csv(ws.path(f"rows{n}.csv"), n) for n in (SMALL, LARGE)}
    config = write_config(ws.path("config.toml"), None)
    rss: dict[int, list[float]] = {SMALL: [], LARGE: []}
    wall: dict[int, list[float]] = {SMALL: [], LARGE: []}
    counted: dict[int, dict[str, int]] = {}
    for _ in range(reps):
        for n in (SMALL, LARGE):
            proc = run(
                [
                    MSGSEND,
                    "bulk",
                    str(files[n]),
                    "--dry-run",
                    "--template",
                    TEMPLATE,
                    "--config",
                    str(config),
                    "--json",
                    "--results",
                    str(ws.path(f"preview{n}.csv")),
                ],
                ws.env,
                check=False,
            )
            assert proc.rc in (0, 1), proc.err[-2000:]  # 1: the file has invalid rows
            report = proc.json()
            counted[n] = {k: report[k] for k in ("ready", "invalid", "duplicate")}
            assert sum(counted[n].values()) == n, counted[n]
            rss[n].append(proc.maxrss_kb / 1024)
            wall[n].append(proc.wall)
    ratio = median(rss[LARGE]) / median(rss[SMALL])
    section.rows.append(
        Row(
            name="peak RSS of `bulk --dry-run`, 200,000 vs 20,000 rows",
            baseline=f"{median(rss[SMALL]):.1f} MiB",
            msgsend=f"{median(rss[LARGE]):.1f} MiB",
            ratio=ratio,
            budget=f"≤ {BUDGET}x",
            met=ratio <= BUDGET,
        )
    )
    rate = LARGE / median(wall[LARGE])
    section.rows.append(
        Row(
            name="validation rate, 200,000 rows (whole command)",
            baseline="—",
            msgsend=f"{rate:,.0f} rows/s",
            ratio=None,
            budget="(none)",
            met=None,
        )
    )
    for n in (SMALL, LARGE):
        section.details.append(
            f"- {n:,} rows: peak RSS MiB {spread(rss[n], '{:.1f}')}, wall s {spread(wall[n])}; "
            f"rows ready/invalid/duplicate: {counted[n]}"
        )
    section.raw = {"rss_mib": rss, "wall": wall}
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 3)
