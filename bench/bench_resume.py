"""8. Resume: ``msgsend bulk --resume`` of a finished 1,000,000-row run vs its ``--dry-run``.

The input is ``common.make_mixed_csv`` (number formats, a ``via`` column, 1% landlines, 1%
repeated rows) rendered through ``--template``. The finished run's results file is made from
the dry run's preview: ``ready`` becomes ``sent`` and the preview's ``bytes`` and ``message``
columns go, so every row is settled exactly as a real run would leave it, without sending a
million messages. The resume then has nothing to send; what it costs is reading the input and
the results and checking that they belong together. Budget (issue #9 item 6): resume wall time
<= 0.4x the dry run's, peak RSS <= the dry run's.
"""

from __future__ import annotations

import csv

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

ROWS = 1_000_000
TIME_BUDGET = 0.4
RSS_BUDGET = 1.0
TEMPLATE = "{name}님, 주문 {order_no} 상품이 발송되었습니다."
_DROPPED = ("bytes", "message")


def finished_results(preview: str, target: str) -> dict[str, int]:
    """Write the results file a finished run would leave from a dry run's preview."""
    counts: dict[str, int] = {}
    with (
        open(preview, encoding="utf-8-sig", newline="") as src,
        open(target, "w", encoding="utf-8-sig", newline="") as dst,
    ):
        reader = csv.reader(src)
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name not in _DROPPED]
        status = header.index("status")
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow([header[i] for i in keep])
        for fields in reader:
            if fields[status] == "ready":
                fields[status] = "sent"
            counts[fields[status]] = counts.get(fields[status], 0) + 1
            writer.writerow([fields[i] for i in keep])
    return counts


def bench(ws: Workspace, reps: int = 3) -> Section:
    section = Section("resume", f"8. Resume of a finished {ROWS:,}-row run (`bulk --resume`)")
    source = make_mixed_csv(ws.path("rows.csv"), ROWS)
    config = write_config(ws.path("config.toml"), None)
    common = ["--template", TEMPLATE, "--config", str(config), "--json"]
    preview = ws.path("rows.preview.csv")
    results = ws.path("rows.results.csv")
    wall: dict[str, list[float]] = {"dry": [], "resume": []}
    rss: dict[str, list[float]] = {"dry": [], "resume": []}
    counts: dict[str, int] = {}
    for rep in range(reps):
        dry = run(
            [MSGSEND, "bulk", str(source), "--dry-run", "--results", str(preview), *common],
            ws.env,
            check=False,
            timeout=900,
        )
        assert dry.rc in (0, 1), dry.err[-2000:]
        wall["dry"].append(dry.wall)
        rss["dry"].append(dry.maxrss_kb / 1024)
        if rep == 0:
            counts = finished_results(str(preview), str(results))
        resume = run(
            [MSGSEND, "bulk", str(source), "--resume", "--results", str(results), *common],
            ws.env,
            check=False,
            timeout=900,
        )
        assert resume.rc in (0, 1), resume.err[-2000:]
        report = resume.json()
        assert report["skipped"] == ROWS and report["sent"] == 0, report
        wall["resume"].append(resume.wall)
        rss["resume"].append(resume.maxrss_kb / 1024)
    ratio = median(wall["resume"]) / median(wall["dry"])
    section.rows.append(
        Row(
            name=f"wall time, resume of a finished {ROWS:,}-row run vs its dry run",
            baseline=f"{median(wall['dry']):.2f} s",
            msgsend=f"{median(wall['resume']):.2f} s",
            ratio=ratio,
            budget=f"≤ {TIME_BUDGET}x",
            met=ratio <= TIME_BUDGET,
        )
    )
    rss_ratio = median(rss["resume"]) / median(rss["dry"])
    section.rows.append(
        Row(
            name=f"peak RSS, resume of a finished {ROWS:,}-row run vs its dry run",
            baseline=f"{median(rss['dry']):.1f} MiB",
            msgsend=f"{median(rss['resume']):.1f} MiB",
            ratio=rss_ratio,
            budget=f"≤ {RSS_BUDGET}x",
            met=rss_ratio <= RSS_BUDGET,
        )
    )
    section.details.append(
        f"- dry run: wall s {spread(wall['dry'])}, peak RSS MiB {spread(rss['dry'], '{:.1f}')}; "
        f"resume: wall s {spread(wall['resume'])}, peak RSS MiB "
        f"{spread(rss['resume'], '{:.1f}')}; rows settled by the finished run: {counts}"
    )
    section.raw = {"wall": wall, "rss_mib": rss}
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 3)
