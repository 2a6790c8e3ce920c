"""Tests for msgsend.bulk: the worker pool, the results file, resume, dry run and interruption."""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from e2e import wait_for
from fakes import FakeSender
from msgsend import bulk
from msgsend.bulk import BulkOptions, BulkReport, send_bulk
from msgsend.errors import InputError, UsageError
from msgsend.events import RowSettled
from msgsend.models import Channel, DeliveryResult
from msgsend.results import (
    PREVIEW_COLUMNS,
    RESULTS_COLUMNS,
    ResultsExistError,
    ResultsInUseError,
    default_preview_path,
    default_results_path,
)


def phone(i: int) -> str:
    return f"010-{i // 10000:04d}-{i % 10000:04d}"


def make_csv(path: Path, rows: Iterable[Sequence[str]], header: str = "phone,message") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def numbered(path: Path, n: int, start: int = 1) -> Path:
    return make_csv(path, ((phone(i), f"message {i}") for i in range(start, start + n)))


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def statuses(path: Path) -> dict[int, str]:
    return {int(line["row"]): line["status"] for line in read_results(path)}


# -- results ------------------------------------------------------------------------------------


def test_sends_every_row_and_records_it(tmp_path: Path) -> None:
    source = make_csv(
        tmp_path / "in.csv",
        [
            ("01012340001", "one"),
            ("010-1234-0002", "two"),
            ("bad", "three"),
            ("010-1234-0009", "fallback"),
            ("010-1234-0005", "fails"),
        ],
    )
    sender = FakeSender(fail={"010-1234-0005"})
    rows: list[RowSettled] = []
    progress: list[tuple[int, int]] = []
    report = send_bulk(
        source, sender, emit=rows.append, on_progress=lambda d, t: progress.append((d, t))
    )
    results_path = tmp_path / "in.results.csv"
    assert report.results_path == results_path == default_results_path(source)
    lines = read_results(results_path)
    assert list(lines[0]) == list(RESULTS_COLUMNS)
    by_row = {int(line["row"]): line for line in lines}
    assert sorted(by_row) == [1, 2, 3, 4, 5]
    assert by_row[1]["recipient"] == "010-1234-0001"  # normalised
    assert by_row[3]["recipient"] == "bad"  # raw when invalid
    assert by_row[3]["status"] == "invalid" and "invalid recipient 'bad'" in by_row[3]["error"]
    assert (by_row[4]["status"], by_row[4]["channel"], by_row[4]["fallback"]) == (
        "sent",
        "sms",
        "true",
    )
    assert by_row[5]["status"] == "failed" and "every provider failed" in by_row[5]["error"]
    assert by_row[1]["attempts"] == "1" and by_row[1]["latency_ms"] == "10.0"
    assert by_row[1]["finished_at"].endswith("+00:00")
    assert (report.sent, report.failed, report.invalid, report.duplicate) == (3, 1, 1, 0)
    assert report.sent_by_channel == {"kakaotalk": 2, "sms": 1}
    # Rows 4 and 5 fell back (5 then failed on SMS too): counted as the run report does.
    assert report.fallbacks == 2 and report.retries == 4
    assert report.exit_code == 1
    assert report.invalid_rows == [(3, by_row[3]["error"])]
    assert report.failed_rows == [(5, by_row[5]["error"])]
    assert sorted(o.row for o in rows) == [1, 2, 3, 4, 5]
    assert {o.recipient_masked for o in rows if o.row == 1} == {"010-****-0001"}
    assert progress[-1] == (5, 5) and [d for d, _ in progress] == [1, 2, 3, 4, 5]
    assert report.counts["sent"] == 3
    document = report.to_json()
    assert document["exit_code"] == 1 and document["invalid_rows"][0]["row"] == 3


def test_all_delivered_exit_zero_and_options_passed(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 10)
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(via="sms", fallback=False, concurrency=3))
    assert report.exit_code == 0 and report.sent == 10 and not report.interrupted
    assert {(call[2], call[3]) for call in sender.calls} == {(Channel.SMS, False)}


def test_via_column_picks_the_channel(tmp_path: Path) -> None:
    source = make_csv(
        tmp_path / "in.csv",
        [("010-1234-0001", "a", "SMS"), ("010-1234-0002", "b", ""), ("010-1234-0003", "c", "x")],
        header="phone,message,Via",
    )
    sender = FakeSender()
    report = send_bulk(source, sender)
    assert sorted((c[0], c[2]) for c in sender.calls) == [
        ("010-1234-0001", Channel.SMS),
        ("010-1234-0002", Channel.KAKAOTALK),
    ]
    assert report.invalid_rows == [(3, "unknown channel 'x' in the via column (kakaotalk or sms)")]


def test_uncertain_rows_are_reported(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 3)
    report = send_bulk(source, FakeSender(uncertain={phone(2)}))
    assert report.uncertain == 1 and report.exit_code == 0
    line = statuses_line = read_results(report.results_path)
    (row2,) = [x for x in line if x["row"] == "2"]
    assert row2["status"] == "sent" and "may have been delivered more than once" in row2["error"]
    assert len(statuses_line) == 3


def test_sender_input_error_marks_the_row_invalid(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 3)
    report = send_bulk(source, FakeSender(invalid={phone(2)}))
    assert statuses(report.results_path) == {1: "sent", 2: "invalid", 3: "sent"}
    assert report.invalid_rows == [(2, "kakaotalk rejected the message (HTTP 400)")]


def test_invalid_rows_reported_exactly_while_others_go_on(tmp_path: Path) -> None:
    bad = {7: ("0101234", "short number"), 43: (phone(43), ""), 57: ("", "no number")}
    bad[86] = (phone(86), "가" * 1001)
    bad[99] = ("02-555-1234", "landline")
    rows = [bad.get(i, (phone(i), f"message {i}")) for i in range(1, 101)]
    source = make_csv(tmp_path / "in.csv", rows)
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(concurrency=8))
    assert [row for row, _ in report.invalid_rows] == sorted(bad)
    reasons = dict(report.invalid_rows)
    assert reasons[43] == "empty message"
    assert "'(empty)'" in reasons[57]
    assert "too long for KakaoTalk" in reasons[86]
    assert report.sent == 95 and len(sender.calls) == 95
    assert len(read_results(report.results_path)) == 100


def test_duplicates(tmp_path: Path) -> None:
    source = make_csv(
        tmp_path / "in.csv",
        [
            ("010-1234-0001", "hello"),
            ("01012340001", "hello"),  # same number written differently
            ("010-1234-0001", "other text"),
            ("+82 10 1234 0001", "hello"),
        ],
    )
    sender = FakeSender()
    report = send_bulk(source, sender)
    lines = {int(x["row"]): x for x in read_results(report.results_path)}
    assert [lines[r]["status"] for r in (1, 2, 3, 4)] == ["sent", "duplicate", "sent", "duplicate"]
    assert lines[2]["error"] == lines[4]["error"] == "duplicate of row 1"
    assert report.duplicate == 2 and report.exit_code == 0 and len(sender.calls) == 2

    sender = FakeSender()
    report = send_bulk(
        source, sender, BulkOptions(allow_duplicates=True, results_path=tmp_path / "r2.csv")
    )
    assert report.sent == 4 and report.duplicate == 0 and len(sender.calls) == 4


def test_results_written_per_row_while_a_send_blocks(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 6)
    gate = threading.Event()

    class OneBlocks(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            if recipient == phone(1):
                assert gate.wait(10)
            return super().send(recipient, text, **kwargs)  # type: ignore[arg-type]

    sender = OneBlocks()
    results: list[BulkReport] = []
    thread = threading.Thread(
        target=lambda: results.append(send_bulk(source, sender, BulkOptions(concurrency=2)))
    )
    thread.start()
    try:
        path = tmp_path / "in.results.csv"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if path.exists() and len(path.read_text().splitlines()) == 6:
                break
            time.sleep(0.01)
        # Rows 2..6 are on disk while row 1 is still being sent.
        assert sorted(statuses(path)) == [2, 3, 4, 5, 6]
    finally:
        gate.set()
        thread.join(10)
    assert sorted(statuses(results[0].results_path)) == [1, 2, 3, 4, 5, 6]


def test_refuses_to_overwrite_results(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 2)
    existing = tmp_path / "in.results.csv"
    existing.write_text("precious\n")
    sender = FakeSender()
    with pytest.raises(ResultsExistError) as info:
        send_bulk(source, sender)
    assert isinstance(info.value, InputError)
    assert "--resume" in str(info.value) and "--results" in str(info.value)
    assert existing.read_text() == "precious\n"
    assert sender.calls == []


def test_template_error_before_any_send_or_file(tmp_path: Path) -> None:
    source = make_csv(tmp_path / "in.csv", [("010-1234-0001", "kim")], header="phone,name")
    sender = FakeSender()
    for template in ("{name.x}", "{name[0]}", "{name:>5}", "{name!r}", "{}", "{nope}"):
        with pytest.raises(InputError, match="available: 'phone', 'name'"):
            send_bulk(source, sender, BulkOptions(template=template))
    assert sender.calls == []
    assert not (tmp_path / "in.results.csv").exists()
    report = send_bulk(source, sender, BulkOptions(template="{name}님 {{안녕}}"))
    assert sender.calls[0][1] == "kim님 {안녕}" and report.sent == 1


def test_concurrency_is_real(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 64)
    together = threading.Barrier(16)

    class SixteenAtOnce(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            together.wait(10)  # each send goes on only once 16 are in flight at the same time
            return super().send(recipient, text, **kwargs)  # type: ignore[arg-type]

    sender = SixteenAtOnce()
    report = send_bulk(source, sender, BulkOptions(concurrency=16))
    assert report.sent == 64 and len(sender.calls) == 64


def test_workers_are_bounded_and_rows_read_lazily(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 200)
    gate = threading.Event()
    sender = FakeSender(gate=gate)
    seen: list[int] = []
    stop = threading.Event()

    def run() -> None:
        send_bulk(
            source,
            sender,
            BulkOptions(concurrency=4),
            stop=stop,
            emit=lambda o: seen.append(o.row),
        )

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(4):
        assert sender.entered.acquire(timeout=5)
    time.sleep(0.1)
    assert sender.in_flight == 4 and len(sender.calls) == 4
    stop.set()
    gate.set()
    thread.join(10)
    assert len(sender.calls) == 4 and sorted(seen) == [1, 2, 3, 4]


# -- interruption -------------------------------------------------------------------------------


def test_stop_event_finishes_in_flight_rows_and_takes_no_more(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 20)
    gate = threading.Event()
    sender = FakeSender(gate=gate)
    stop = threading.Event()
    reports: list[BulkReport] = []
    thread = threading.Thread(
        target=lambda: reports.append(
            send_bulk(source, sender, BulkOptions(concurrency=2), stop=stop)
        )
    )
    thread.start()
    assert sender.entered.acquire(timeout=5) and sender.entered.acquire(timeout=5)
    stop.set()
    gate.set()
    thread.join(10)
    (report,) = reports
    assert report.interrupted and report.exit_code == 130
    assert report.sent == 2 and len(sender.calls) == 2
    assert statuses(report.results_path) == {1: "sent", 2: "sent"}

    resumed = FakeSender()
    report = send_bulk(source, resumed, BulkOptions(resume=True))
    assert sorted(resumed.recipients) == [phone(i) for i in range(3, 21)]
    assert report.skipped == 2 and report.sent == 18 and report.exit_code == 0


def test_keyboard_interrupt_closes_the_results_cleanly(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 40)

    class InterruptsMain(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            if recipient == phone(10):
                os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C would
            return super().send(recipient, text, **kwargs)  # type: ignore[arg-type]

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            send_bulk(source, InterruptsMain(latency=0.01), BulkOptions(concurrency=2))
    finally:
        signal.signal(signal.SIGINT, previous)
    path = tmp_path / "in.results.csv"
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    first_run = statuses(path)
    assert 0 < len(first_run) < 40 and set(first_run.values()) == {"sent"}

    resumed = FakeSender()
    send_bulk(source, resumed, BulkOptions(resume=True, concurrency=2))
    assert set(resumed.recipients).isdisjoint(phone(r) for r in first_run)
    assert len(statuses(path)) == 40


def test_callback_error_stops_the_run_and_is_raised(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 50)

    def on_row(outcome: RowSettled) -> None:
        if outcome.row == 5:
            raise RuntimeError("progress bar broke")

    with pytest.raises(RuntimeError, match="progress bar broke"):
        send_bulk(source, FakeSender(), BulkOptions(concurrency=1), emit=on_row)
    recorded = statuses(tmp_path / "in.results.csv")
    assert 5 in recorded and len(recorded) < 50


# -- resume -------------------------------------------------------------------------------------


def test_resume_sends_only_failed_and_missing_rows(tmp_path: Path) -> None:
    source = make_csv(
        tmp_path / "in.csv",
        [(phone(i), f"message {i}") for i in range(1, 9)] + [("bad", "x"), (phone(1), "message 1")],
    )
    first = FakeSender(fail={phone(2), phone(5)})
    report = send_bulk(source, first)
    assert (report.sent, report.failed, report.invalid, report.duplicate) == (6, 2, 1, 1)
    path = report.results_path
    # Drop the line of row 7 as if the run had been killed before recording it.
    kept = [
        line for line in path.read_text().splitlines(keepends=True) if not line.startswith("7,")
    ]
    path.write_text("".join(kept))

    second = FakeSender()
    report = send_bulk(source, second, BulkOptions(resume=True))
    assert sorted(second.recipients) == [phone(2), phone(5), phone(7)]
    assert (report.sent, report.failed, report.skipped) == (3, 0, 7)
    assert report.previously == {"sent": 5, "invalid": 1, "duplicate": 1}
    assert report.exit_code == 1  # row 9 is still invalid
    assert statuses(path) == {
        1: "sent", 2: "sent", 3: "sent", 4: "sent", 5: "sent",
        6: "sent", 7: "sent", 8: "sent", 9: "invalid", 10: "duplicate",
    }  # fmt: skip

    third = FakeSender()
    report = send_bulk(source, third, BulkOptions(resume=True))
    assert third.calls == [] and report.skipped == 10


def test_resume_never_resends_a_row_recorded_sent(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 3)
    path = tmp_path / "in.results.csv"
    path.write_text(
        ",".join(RESULTS_COLUMNS) + "\n"
        "1,010-0000-0001,sent,kakaotalk,false,1,,5.0,2024-01-01T00:00:00.000+00:00,kakaotalk\n"
        "1,010-0000-0001,failed,kakaotalk,false,1,x,5.0,2024-01-01T00:00:01.000+00:00,kakaotalk\n"
    )
    sender = FakeSender()
    send_bulk(source, sender, BulkOptions(resume=True))
    assert sorted(sender.recipients) == [phone(2), phone(3)]


def test_resume_ignores_a_torn_last_line(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 5)
    path = tmp_path / "in.results.csv"
    header = ",".join(RESULTS_COLUMNS) + "\n"
    done = "".join(
        f"{i},{phone(i)},sent,kakaotalk,false,1,,5.0,2024-01-01T00:00:00.000+00:00,kakaotalk\n"
        for i in (1, 2)
    )
    torn = f"3,{phone(3)},se"  # killed mid-write
    path.write_text(header + done + torn)
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(resume=True))
    assert sorted(sender.recipients) == [phone(3), phone(4), phone(5)]
    text = path.read_text()
    assert text.startswith(header + done + torn + "\n")
    assert statuses(path) == {1: "sent", 2: "sent", 3: "sent", 4: "sent", 5: "sent"}
    assert report.skipped == 2
    # A second resume reads the repaired file, torn fragment included, without complaint.
    again = FakeSender()
    send_bulk(source, again, BulkOptions(resume=True))
    assert again.calls == []


def test_resume_does_not_resend_a_torn_line_whose_status_sent_is_whole(tmp_path: Path) -> None:
    # A full disk cut the line after its status: the row was delivered, and stays so.
    source = numbered(tmp_path / "in.csv", 4)
    path = tmp_path / "in.results.csv"
    header = ",".join(RESULTS_COLUMNS) + "\n"
    done = f"1,{phone(1)},sent,kakaotalk,false,1,,5.0,2024-01-01T00:00:00.000+00:00,kakaotalk\n"
    path.write_text(header + done + f"2,{phone(2)},sent,kaka")
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(resume=True))
    assert sorted(sender.recipients) == [phone(3), phone(4)]
    assert report.skipped == 2
    again = FakeSender()
    send_bulk(source, again, BulkOptions(resume=True))
    assert again.calls == []


def test_resume_with_only_a_torn_header(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 2)
    path = tmp_path / "in.results.csv"
    path.write_text("row,recip")
    sender = FakeSender()
    send_bulk(source, sender, BulkOptions(resume=True))
    assert len(sender.calls) == 2
    assert path.read_text(encoding="utf-8-sig").splitlines()[0] == ",".join(RESULTS_COLUMNS)


def test_resume_without_results_is_a_fresh_run(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 3)
    report = send_bulk(source, FakeSender(), BulkOptions(resume=True))
    assert report.sent == 3 and report.skipped == 0


def test_resume_rebuilds_the_duplicate_index(tmp_path: Path) -> None:
    rows = [(phone(1), "hi"), (phone(2), "hi"), (phone(1), "hi"), (phone(2), "hi")]
    source = make_csv(tmp_path / "in.csv", rows)
    path = tmp_path / "in.results.csv"
    # Row 1 was sent, then the run was killed before rows 2-4 were recorded.
    path.write_text(
        ",".join(RESULTS_COLUMNS) + "\n"
        f"1,{phone(1)},sent,kakaotalk,false,1,,5.0,2024-01-01T00:00:00.000+00:00,kakaotalk\n"
    )
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(resume=True))
    assert sender.recipients == [phone(2)]
    lines = {int(x["row"]): x for x in read_results(path)}
    assert lines[3]["status"] == "duplicate" and lines[3]["error"] == "duplicate of row 1"
    assert lines[4]["error"] == "duplicate of row 2"
    assert report.duplicate == 2


def test_resume_detects_results_of_another_file(tmp_path: Path) -> None:
    first = numbered(tmp_path / "first.csv", 5)
    report = send_bulk(first, FakeSender(), BulkOptions(results_path=tmp_path / "shared.csv"))
    assert report.sent == 5
    other = numbered(tmp_path / "other.csv", 5, start=100)
    sender = FakeSender()
    with pytest.raises(InputError, match=r"does not match.*row 1"):
        send_bulk(other, sender, BulkOptions(results_path=tmp_path / "shared.csv", resume=True))
    shorter = numbered(tmp_path / "short.csv", 3)
    with pytest.raises(InputError, match=r"records row [45] but .* has 3 rows"):
        send_bulk(shorter, sender, BulkOptions(results_path=tmp_path / "shared.csv", resume=True))
    assert sender.calls == []


@pytest.fixture(params=["same pass", "pass of its own"])
def hold_limit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Check recorded recipients while producing (rows held back), or in a pass first."""
    if request.param == "pass of its own":
        monkeypatch.setattr(bulk, "HOLD_LIMIT", 0)
    return str(request.param)


def test_a_late_mismatch_refuses_before_sending_or_recording_anything(
    tmp_path: Path, hold_limit: str
) -> None:
    rows = [(phone(i), f"m{i}") for i in range(1, 9)]
    first = make_csv(tmp_path / "first.csv", rows)
    results = tmp_path / "shared.csv"
    send_bulk(first, FakeSender(fail={phone(2), phone(3)}), BulkOptions(results_path=results))
    before = results.read_bytes()
    # the same file but for its last row: rows 2 and 3 (failed) would be sent again first
    changed = make_csv(tmp_path / "changed.csv", [*rows[:-1], (phone(99), "m8")])
    sender = FakeSender()
    options = BulkOptions(results_path=results, resume=True)
    with pytest.raises(InputError, match=r"does not match .*row 8 was recorded sent"):
        send_bulk(changed, sender, options)
    assert sender.calls == []
    assert results.read_bytes() == before


def test_resume_skips_settled_rows_and_keeps_duplicates_exact(
    tmp_path: Path, hold_limit: str
) -> None:
    # Numbers in several spellings: settled rows are compared and indexed without validation.
    rows = [
        ("01012340001", "hi"),  # 1 sent (recorded normalised)
        ("+82 10-1234-0002", "hi"),  # 2 failed
        ("02-123-4567", "hi"),  # 3 invalid
        ("010-1234-0001", "hi"),  # 4 duplicate of 1
        ("010 1234 0001", "hi"),  # 5 unrecorded: a duplicate of the sent row 1
        ("010-1234-0002", "hi"),  # 6 unrecorded: a duplicate of row 2, sent again now
        ("010-1234-0007", "new"),  # 7 unrecorded
    ]
    source = make_csv(tmp_path / "in.csv", rows)
    first = FakeSender(fail={"010-1234-0002"})
    report = send_bulk(source, first)
    assert (report.sent, report.failed, report.invalid, report.duplicate) == (2, 1, 1, 3)
    path = report.results_path
    kept = [line for line in path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
            if not line.startswith(("5,", "6,", "7,"))]  # fmt: skip
    path.write_text("".join(kept), encoding="utf-8-sig")

    second = FakeSender()
    report = send_bulk(source, second, BulkOptions(resume=True))
    assert sorted(second.recipients) == ["010-1234-0002", "010-1234-0007"]
    assert (report.skipped, report.sent, report.duplicate) == (3, 2, 2)
    assert report.previously == {"sent": 1, "invalid": 1, "duplicate": 1}
    lines = {int(x["row"]): x for x in read_results(path)}
    assert lines[5]["status"] == "duplicate" and lines[5]["error"] == "duplicate of row 1"
    assert lines[6]["status"] == "duplicate" and lines[6]["error"] == "duplicate of row 2"


def test_resuming_a_finished_run_sends_and_writes_nothing(tmp_path: Path) -> None:
    rows = [(phone(i), "same") for i in range(1, 6)] + [("bad", "x"), (phone(1), "same")]
    source = make_csv(tmp_path / "in.csv", rows)
    report = send_bulk(source, FakeSender())
    before = report.results_path.read_bytes()
    sender = FakeSender()
    progress: list[tuple[int, int]] = []
    again = send_bulk(
        source, sender, BulkOptions(resume=True), on_progress=lambda d, t: progress.append((d, t))
    )
    assert sender.calls == [] and report.results_path.read_bytes() == before
    assert (again.skipped, again.total_rows, again.exit_code) == (7, 7, 1)  # row 6 is invalid
    assert again.previously == {"sent": 5, "invalid": 1, "duplicate": 1}
    assert progress[-1] == (7, 7)


def test_resume_refuses_a_foreign_file(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 2)
    (tmp_path / "in.results.csv").write_text("phone,message\n010-1234-5678,hi\n")
    with pytest.raises(InputError, match="not a msgsend results file"):
        send_bulk(source, FakeSender(), BulkOptions(resume=True))


def test_results_locked_while_in_use(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 4)
    gate = threading.Event()
    sender = FakeSender(gate=gate)
    thread = threading.Thread(target=lambda: send_bulk(source, sender, BulkOptions(concurrency=1)))
    thread.start()
    try:
        assert sender.entered.acquire(timeout=5)
        second = FakeSender()
        with pytest.raises(ResultsInUseError, match="in use by another msgsend run"):
            send_bulk(source, second, BulkOptions(resume=True))
        assert second.calls == []
    finally:
        gate.set()
        thread.join(10)


# -- dry run ------------------------------------------------------------------------------------


def test_dry_run_writes_a_preview_and_sends_nothing(tmp_path: Path) -> None:
    source = make_csv(
        tmp_path / "in.csv",
        [(phone(1), "김철수"), (phone(1), "김철수"), ("bad", "이영희"), (phone(3), "박민수")],
        header="phone,name",
    )
    outcomes: list[RowSettled] = []
    report = send_bulk(
        source,
        None,
        BulkOptions(template="{name}님 안녕하세요", dry_run=True),
        emit=outcomes.append,
    )
    preview = default_preview_path(source)
    assert report.results_path == preview and report.dry_run
    assert preview.read_bytes().startswith(b"\xef\xbb\xbf")
    lines = read_results(preview)
    assert list(lines[0]) == list(PREVIEW_COLUMNS)
    assert [(x["row"], x["status"], x["message"]) for x in lines] == [
        ("1", "ready", "김철수님 안녕하세요"),
        ("2", "duplicate", "김철수님 안녕하세요"),
        ("3", "invalid", "이영희님 안녕하세요"),
        ("4", "ready", "박민수님 안녕하세요"),
    ]
    assert (report.ready, report.duplicate, report.invalid, report.exit_code) == (2, 1, 1, 1)
    assert [o.status for o in outcomes] == ["ready", "duplicate", "invalid", "ready"]
    assert not (tmp_path / "in.results.csv").exists()

    sender = FakeSender()
    send_bulk(
        source, sender, BulkOptions(template="{name}님 안녕하세요", dry_run=True)
    )  # overwrites the preview
    assert sender.calls == []
    # A real run never takes the preview for results.
    with pytest.raises(InputError, match="dry-run preview"):
        send_bulk(source, sender, BulkOptions(template="{name}", results_path=preview, resume=True))
    assert sender.calls == []


def test_dry_run_never_overwrites_results(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 2)
    report = send_bulk(source, FakeSender())
    before = report.results_path.read_bytes()
    with pytest.raises(ResultsExistError, match="not a dry-run preview"):
        send_bulk(source, None, BulkOptions(dry_run=True, results_path=report.results_path))
    assert report.results_path.read_bytes() == before


def test_dry_run_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """Streaming: four times the rows, about the same peak (bench/bench_memory.py: 200k RSS)."""

    def peak_for(n: int) -> int:
        path = tmp_path / f"rows{n}.csv"
        with path.open("w", encoding="utf-8") as handle:
            handle.write("phone,name,message\n")
            for i in range(n):
                handle.write(f"{phone(i)},고객{i},안녕하세요 고객{i}님 주문이 출발했습니다\n")
        tracemalloc.start()
        try:
            report = send_bulk(path, None, BulkOptions(dry_run=True))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.ready == n
        return peak

    small, large = peak_for(200), peak_for(800)
    # Holding the records would cost ~500 bytes each (~0.3 MB more); the duplicate index
    # ~12-36 bytes.
    assert large - small < 90_000, (small, large)
    assert large < 1_500_000, large


# -- kill -9 ------------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    from msgsend.bulk import BulkOptions, send_bulk
    from msgsend.models import Channel, DeliveryResult

    source, results, delivered, answered = sys.argv[1:4] + [int(sys.argv[4])]
    log = os.open(delivered, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    lock, never = threading.Lock(), threading.Event()

    class HoldingSender:
        def send(self, recipient, text, *, via=Channel.KAKAOTALK, fallback=None, message_id=None):
            global answered
            os.write(log, (text + "\\n").encode())  # delivered ...
            with lock:
                answered -= 1
                held = answered < 0
            if held:
                never.wait(60)  # ... but not yet recorded: the kill comes now
            return DeliveryResult(recipient, "sent", channel=str(via), attempts=1)

    options = BulkOptions(concurrency=4, results_path=results)
    send_bulk(source, HoldingSender(), options)
    """
)


def test_kill_9_then_resume_loses_nothing(tmp_path: Path) -> None:
    n, concurrency, answered = 60, 4, 20
    source = numbered(tmp_path / "in.csv", n)
    results = tmp_path / "results.csv"
    delivered = tmp_path / "delivered.log"

    def lines(path: Path) -> int:
        return path.read_bytes().count(b"\n") if path.exists() else 0

    command = [sys.executable, "-c", KILL_SCRIPT, str(source), str(results), str(delivered)]
    process = subprocess.Popen([*command, str(answered)], stdout=subprocess.DEVNULL)
    try:
        # killed with `answered` rows recorded and `concurrency` delivered, never answered
        assert wait_for(
            lambda: lines(delivered) == answered + concurrency and lines(results) == answered + 1,
            timeout=30,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    recorded_sent = {row for row, status in statuses(results).items() if status == "sent"}
    assert len(recorded_sent) == answered
    first = [int(line.removeprefix("message ")) for line in delivered.read_text().splitlines()]
    in_flight = set(first) - recorded_sent
    assert len(in_flight) == concurrency

    resumed = FakeSender()  # a new run, in this process: the boundary that matters is the kill
    report = send_bulk(source, resumed, BulkOptions(results_path=results, resume=True))
    assert (report.skipped, report.sent, report.exit_code) == (answered, n - answered, 0)

    counts = collections.Counter(first)
    counts.update(int(text.removeprefix("message ")) for _, text, _, _ in resumed.calls)
    assert set(counts) == set(range(1, n + 1))  # every row delivered at least once
    assert all(counts[row] == 1 for row in recorded_sent)  # never sent again
    assert {row for row, c in counts.items() if c > 1} == in_flight  # only rows in flight
    assert statuses(results) == dict.fromkeys(range(1, n + 1), "sent")


def test_default_paths() -> None:
    assert default_results_path("/data/list.csv") == Path("/data/list.results.csv")
    assert default_results_path("/data/LIST.CSV") == Path("/data/LIST.results.csv")
    assert default_preview_path("/data/list.txt") == Path("/data/list.txt.preview.csv")


def test_usage_errors(tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.csv", 1)
    with pytest.raises(ValueError, match="concurrency"):
        send_bulk(source, FakeSender(), BulkOptions(concurrency=0))
    with pytest.raises(UsageError, match="--dry-run and --resume exclude each other"):
        send_bulk(source, None, BulkOptions(dry_run=True, resume=True))
    with pytest.raises(ValueError, match="sender is required"):
        send_bulk(source, None)


def test_a_waiting_row_is_tried_again_with_the_providers_that_refused_it(tmp_path: Path) -> None:
    # Its earlier 5xx answers travel with it, so the breakers do not count them twice.
    from fakes import FakeClock, FakeSleep
    from msgsend.bulk import RunClocks

    source = tmp_path / "in.csv"
    source.write_text("phone,message\n010-1000-0001,hi\n", encoding="utf-8")
    clock = FakeClock()
    tries: list[dict[str, object]] = []

    class Sender:
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            tries.append(kwargs)
            if len(tries) == 1:
                return DeliveryResult(
                    recipient, "failed", attempts=3, unavailable=True, refused_by=("kakaotalk",)
                )
            return DeliveryResult(recipient, "sent", channel="kakaotalk", attempts=1)

    report = send_bulk(
        source,
        Sender(),
        BulkOptions(concurrency=1),
        clocks=RunClocks(monotonic=clock, wall=clock, wait=FakeSleep(clock)),
    )
    assert report.sent == 1 and len(tries) == 2
    assert "refused_by" not in tries[0]
    assert tries[1]["refused_by"] == ("kakaotalk",)


def test_a_sender_that_raises_stops_the_run_and_leaves_the_row_unrecorded(tmp_path: Path) -> None:
    # A bug in the sender never records rows failed without an attempt, one after another.
    source = make_csv(tmp_path / "in.csv", [(f"010-1000-000{i}", "hi") for i in range(1, 6)])

    class Broken(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            if recipient.endswith("0002"):
                raise RuntimeError("boom")
            return super().send(recipient, text, **kwargs)  # type: ignore[arg-type]

    report = send_bulk(source, Broken(), BulkOptions(concurrency=1))
    assert report.stopped is not None and "internal error on row 2: RuntimeError: boom" in (
        report.stopped
    )
    assert report.exit_code == 70
    assert [row["row"] for row in read_results(report.results_path)] == ["1"]
    assert report.failed == 0 and report.left == 4


def test_a_run_stopped_by_a_bug_after_a_failed_row_exits_70_not_1(tmp_path: Path) -> None:
    # Rows left unsent by a bug must not hide behind "a row was not delivered" (1).
    source = make_csv(tmp_path / "in.csv", [(f"010-1000-000{i}", "hi") for i in range(1, 6)])

    class Broken(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: object) -> DeliveryResult:
            if recipient.endswith("0001"):
                return DeliveryResult(
                    recipient, "failed", "kakaotalk", attempts=1, error="HTTP 500"
                )
            if recipient.endswith("0002"):
                raise RuntimeError("boom")
            return super().send(recipient, text, **kwargs)  # type: ignore[arg-type]

    report = send_bulk(source, Broken(), BulkOptions(concurrency=1))
    assert report.failed == 1 and report.left == 4
    assert report.exit_code == 70
