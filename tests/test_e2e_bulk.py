"""End to end: the real ``msgsend bulk`` against the real sandbox on loopback (issue 4).

In-process runs use typer's CliRunner; runs that are killed or interrupted are real
``python -m msgsend`` processes sending to a sandbox that runs in the test process, so the
sandbox's record of what was delivered survives the process under test. The sandbox holds the
answers to the messages in flight (``HoldAfter``) while such a process is killed or interrupted,
so these tests wait for a state, never for a slow provider to be part-way through.
"""

from __future__ import annotations

import collections
import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from e2e import failing_phone, phone, read_results, wait_for, write_config, write_csv
from msgsend.cli import app
from msgsend.sandbox import ReceivedRequest

runner = CliRunner()

RESULTS_HEADER = "row,recipient,status,channel,fallback,attempts,error,latency_ms,finished_at,kind"
PREVIEW_HEADER = RESULTS_HEADER + ",bytes,message"
SETTLED = {"sent", "invalid", "duplicate"}


# ---------------------------------------------------------------------------- helpers


def read_preview(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def latest(results: list[dict[str, str]]) -> dict[int, str]:
    """The status each row ends with (a row is re-recorded only after ``failed``)."""
    return {int(line["row"]): line["status"] for line in results}


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def one_json_document(stdout: str) -> dict[str, Any]:
    """Parse stdout, asserting it holds exactly one JSON document and nothing else."""
    text = stdout.strip()
    document, end = json.JSONDecoder().raw_decode(text)
    assert end == len(text), f"more than one document on stdout: {text[end:][:200]!r}"
    assert isinstance(document, dict)
    return document


@contextmanager
def cli_process(tmp_path: Path, name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m msgsend ARGS`` with stdout/stderr in files; always reaped."""
    with (
        (tmp_path / f"{name}.stdout").open("wb") as out,
        (tmp_path / f"{name}.stderr").open("wb") as err,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "msgsend", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(15)


def output(tmp_path: Path, name: str) -> tuple[str, str]:
    return (
        (tmp_path / f"{name}.stdout").read_text(encoding="utf-8"),
        (tmp_path / f"{name}.stderr").read_text(encoding="utf-8"),
    )


class HoldAfter:
    """A sandbox ``on_request`` hook: the first ``answered`` deliveries are answered at once,
    every later one is held until ``release()``.

    A held request has reached the provider (the sandbox records it delivered) but its answer
    has not reached msgsend: exactly the messages in flight when a run is killed or
    interrupted. Waiting for the hold replaces waiting for a slow provider to be part-way.
    """

    def __init__(self, answered: int) -> None:
        self._left = answered
        self.held: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()

    def __call__(self, record: ReceivedRequest) -> None:
        if record.status != 200 or self._released.is_set():
            return
        with self._lock:
            if self._left > 0:
                self._left -= 1
                return
            self.held.append(record.recipient or "")
        self._released.wait(60)  # bounded: released by the test, at the latest in its finally

    def holding(self) -> int:
        with self._lock:
            return len(self.held)

    def release(self) -> None:
        self._released.set()


def sent_lines(path: Path) -> int:
    try:
        return sum(1 for line in read_results(path) if line["status"] == "sent")
    except (FileNotFoundError, StopIteration):
        return 0


#: the killed and interrupted runs: rows in flight at once, rows answered before the hold
CONCURRENCY, ANSWERED = 4, 10


@contextmanager
def run_until_held(
    sandbox: Any, tmp_path: Path, args: Sequence[str], results_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], HoldAfter]]:
    """Start ``msgsend ARGS`` as a process; yield it once ``ANSWERED`` rows are recorded sent
    in ``results_path`` and ``CONCURRENCY`` more are delivered but held unanswered. The hold
    ends on the way out.
    """
    answered, concurrency = ANSWERED, CONCURRENCY
    hold = HoldAfter(answered)
    sandbox.on_request = hold
    try:
        with cli_process(tmp_path, "first", *args) as process:
            assert wait_for(
                lambda: hold.holding() == concurrency and sent_lines(results_path) == answered,
                timeout=30,
            ), output(tmp_path, "first")
            assert process.poll() is None, "the run ended before it could be stopped"
            yield process, hold
    finally:
        hold.release()


def deliveries(sandbox: Any) -> collections.Counter[str]:
    return collections.Counter(r.recipient for r in sandbox.delivered())


# ---------------------------------------------------------------------------- results


def test_results_file_matches_what_the_sandbox_received(sandbox: Any, tmp_path: Path) -> None:
    # 25 rows: plain rows, KakaoTalk failures (fallback to SMS), invalid rows, one duplicate
    # and one repeat of a recipient with another message (not a duplicate).
    rows: list[tuple[str, str]] = []
    kinds: list[str] = []
    for row in range(1, 26):
        if row in (5, 11, 17, 23):
            rows.append((failing_phone(row), f"{row}번 고객님, 주문이 발송되었습니다."))
            kinds.append("fallback")
        elif row == 10:
            rows.append(("02-123-4567", "유선 번호"))
            kinds.append("invalid")
        elif row == 14:
            rows.append((phone(row), "   "))
            kinds.append("invalid")
        elif row == 20:
            rows.append(("010-12-34", "짧은 번호"))
            kinds.append("invalid")
        elif row == 21:
            rows.append(rows[0])
            kinds.append("duplicate")
        elif row == 22:
            rows.append((rows[1][0], "같은 번호, 다른 메시지"))
            kinds.append("kakaotalk")
        elif row == 24:
            rows.append(("+82 10-6042-3042", f"{row}번 고객님"))
            kinds.append("kakaotalk")
        else:
            rows.append((phone(row), f"{row}번 고객님, 주문이 발송되었습니다."))
            kinds.append("kakaotalk")
    source = write_csv(tmp_path / "orders.csv", rows)
    results_path = tmp_path / "orders.results.csv"
    config = write_config(tmp_path / "msgsend.toml", sandbox, failures_to_open=100)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))

    result = invoke("bulk", str(source), "--json", "--config", str(config))

    assert result.exit_code == 1, result.output  # invalid rows
    document = one_json_document(result.stdout)
    results = read_results(results_path)
    assert sorted(int(line["row"]) for line in results) == list(range(1, 26))  # one line each
    by_row = {int(line["row"]): line for line in results}

    delivered = collections.Counter((r.recipient, r.message) for r in sandbox.delivered())
    provider_of = {(r.recipient, r.message): r.provider for r in sandbox.delivered()}
    received_recipients = {r.recipient for r in sandbox.received()}
    for row, ((recipient, message), kind) in enumerate(zip(rows, kinds, strict=True), 1):
        line = by_row[row]
        if kind in ("kakaotalk", "fallback"):
            key = (line["recipient"], message)
            assert line["status"] == "sent", line
            assert delivered[key] == 1, (row, key)  # delivered exactly once
            assert provider_of[key] == line["channel"], line
        if kind == "kakaotalk":
            assert (line["channel"], line["fallback"], line["attempts"]) == (
                "kakaotalk",
                "false",
                "1",
            )
        elif kind == "fallback":
            assert (line["channel"], line["fallback"], line["attempts"]) == ("sms", "true", "4")
            kakaotalk = [r for r in sandbox.received("kakaotalk") if r.recipient == recipient]
            assert [r.status for r in kakaotalk] == [503, 503, 503]
        elif kind == "invalid":
            assert line["status"] == "invalid" and line["error"], line
            assert line["recipient"] not in received_recipients
        elif kind == "duplicate":
            assert line["status"] == "duplicate" and line["error"] == "duplicate of row 1"
    assert by_row[24]["recipient"] == "010-6042-3042"  # sent normalised
    assert sandbox.count("sms") == sandbox.count("sms", status=200) == 4
    assert sum(delivered.values()) == sum(1 for line in results if line["status"] == "sent")

    # the --json document agrees with the results file
    statuses = collections.Counter(line["status"] for line in results)
    sent = [line for line in results if line["status"] == "sent"]
    assert {key: document[key] for key in ("sent", "failed", "invalid", "duplicate")} == {
        "sent": statuses["sent"],
        "failed": statuses["failed"],
        "invalid": statuses["invalid"],
        "duplicate": statuses["duplicate"],
    }
    assert (document["sent"], document["invalid"], document["duplicate"]) == (21, 3, 1)
    assert document["sent_by_channel"] == dict(collections.Counter(x["channel"] for x in sent))
    assert document["fallbacks"] == sum(1 for x in sent if x["fallback"] == "true") == 4
    assert sorted((x["row"], x["reason"]) for x in document["invalid_rows"]) == sorted(
        (int(x["row"]), x["error"]) for x in results if x["status"] == "invalid"
    )
    assert document["total_rows"] == 25 and document["exit_code"] == 1
    assert document["results"] == str(results_path)


def test_dry_run_sends_nothing_and_writes_a_preview(sandbox: Any, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "list.csv",
        [
            ("김민준", phone(1)),
            ("이서연", phone(2)),
            ("박지호", "02-123-4567"),
            ("김민준", phone(1)),
            ("최수아", failing_phone(5)),
        ],
        header=("name", "phone"),
    )
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))

    result = invoke(
        "bulk", str(source), "--dry-run", "--json", "--template", "{name}님 안녕하세요",
        "--config", str(config),
    )  # fmt: skip

    document = one_json_document(result.stdout)
    assert result.exit_code == document["exit_code"], result.output
    assert document["dry_run"] is True
    assert (document["ready"], document["invalid"], document["duplicate"]) == (3, 1, 1)
    assert document["sent"] == 0
    assert sandbox.count() == 0  # nothing sent, not even a ping
    assert not (tmp_path / "list.results.csv").exists()
    preview_path = tmp_path / "list.preview.csv"
    assert Path(document["results"]) == preview_path
    assert preview_path.read_bytes().startswith(b"\xef\xbb\xbf" + PREVIEW_HEADER.encode())
    preview = {int(line["row"]): line for line in read_preview(preview_path)}
    assert {row: line["status"] for row, line in preview.items()} == {
        1: "ready",
        2: "ready",
        3: "invalid",
        4: "duplicate",
        5: "ready",
    }
    assert preview[1]["message"] == "김민준님 안녕하세요"
    assert preview[2]["channel"] == "kakaotalk"


def test_refuses_to_overwrite_an_existing_results_file(sandbox: Any, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), f"m{i}") for i in range(3)])
    results_path = tmp_path / "out.csv"
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    first = invoke("bulk", str(source), "--results", str(results_path), "--config", str(config))
    assert first.exit_code == 0, first.output
    before = results_path.read_bytes()
    stat = results_path.stat()
    requests = sandbox.count()

    again = invoke("bulk", str(source), "--results", str(results_path), "--config", str(config))

    assert again.exit_code == 2
    assert "--resume" in again.stderr and str(results_path) in again.stderr
    assert "Traceback" not in again.output
    assert results_path.read_bytes() == before
    assert results_path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sandbox.count() == requests  # nothing sent


def test_resume_after_a_partial_run_sends_only_the_failed_rows(
    sandbox: Any, tmp_path: Path
) -> None:
    rows = [(phone(i), f"메시지 {i}") for i in range(1, 21)]
    rows.append(("02-123-4567", "유선"))  # row 21: invalid
    rows.append(rows[0])  # row 22: duplicate of row 1
    failing_rows = {3, 8, 13, 18}
    source = write_csv(tmp_path / "in.csv", rows)
    results_path = tmp_path / "in.results.csv"
    config = write_config(tmp_path / "msgsend.toml", sandbox, failures_to_open=100)
    # First run: KakaoTalk fails for some recipients, and SMS (their fallback) is down.
    sandbox.set_kakaotalk_failures(recipients=[rows[r - 1][0] for r in failing_rows])
    sandbox.set_down("sms")

    first = invoke("bulk", str(source), "--json", "--config", str(config))

    assert first.exit_code == 1, first.output
    statuses = latest(read_results(results_path))
    assert {row for row, status in statuses.items() if status == "failed"} == failing_rows
    assert statuses[21] == "invalid" and statuses[22] == "duplicate"
    assert sum(1 for status in statuses.values() if status == "sent") == 16
    first_delivered = deliveries(sandbox)
    assert set(first_delivered) == {rows[r - 1][0] for r in range(1, 21) if r not in failing_rows}

    # Second run: both providers healthy again.
    sandbox.set_kakaotalk_failures()
    sandbox.set_down("sms", False)
    sandbox.reset()
    second = invoke("bulk", str(source), "--resume", "--json", "--config", str(config))

    assert second.exit_code == 1, second.output  # row 21 is still invalid
    document = one_json_document(second.stdout)
    assert document["sent"] == len(failing_rows)
    assert document["skipped"] == 18
    assert document["previously"] == {"sent": 16, "invalid": 1, "duplicate": 1}
    # only the failed rows were sent again, each once; no other recipient was contacted
    assert deliveries(sandbox) == collections.Counter(rows[r - 1][0] for r in failing_rows)
    assert {r.recipient for r in sandbox.received()} == {rows[r - 1][0] for r in failing_rows}
    final = latest(read_results(results_path))
    assert final == {**dict.fromkeys(range(1, 21), "sent"), 21: "invalid", 22: "duplicate"}


# ---------------------------------------------------------------------------- processes


def test_kill_9_mid_run_then_resume_in_a_new_process(sandbox: Any, tmp_path: Path) -> None:
    n, concurrency, answered = 24, CONCURRENCY, ANSWERED
    invalid_rows = {5, 18, 23}  # before and after the row where the run is killed
    rows = [
        ("02-555-0000" if row in invalid_rows else phone(row), f"안내 {row}")
        for row in range(1, n + 1)
    ]
    source = write_csv(tmp_path / "big.csv", rows)
    results_path = tmp_path / "big.results.csv"
    config = write_config(tmp_path / "msgsend.toml", sandbox, timeout=60)  # held: no timeout
    args = ("bulk", str(source), "--concurrency", str(concurrency), "--config", str(config))
    # killed with `concurrency` messages delivered but not yet answered
    with run_until_held(sandbox, tmp_path, args, results_path) as (process, hold):
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    in_flight = list(hold.held)
    first = read_results(results_path)
    sent_first = {int(line["row"]) for line in first if line["status"] == "sent"}
    assert len(sent_first) == answered

    with cli_process(tmp_path, "second", *args, "--resume", "--json") as process:
        process.wait(60)
    stdout, stderr = output(tmp_path, "second")
    assert process.returncode == 1, stderr  # the invalid rows
    document = one_json_document(stdout)  # a real process: exactly one document on stdout
    assert "\x1b[" not in stderr
    assert document["skipped"] + document["sent"] + document["invalid"] == n

    counts = deliveries(sandbox)
    valid = {row: rows[row - 1][0] for row in range(1, n + 1) if row not in invalid_rows}
    assert all(counts[recipient] >= 1 for recipient in valid.values())  # nothing lost
    assert all(counts[valid[row]] == 1 for row in sent_first)  # recorded sent: never again
    resent = [recipient for recipient, count in counts.items() if count > 1]
    assert sorted(resent) == sorted(in_flight)  # only the rows in flight at the kill, once more
    assert all(counts[recipient] == 2 for recipient in resent)
    assert set(counts) == set(valid.values())

    final = read_results(results_path)
    per_row = collections.Counter(int(line["row"]) for line in final)
    assert per_row == collections.Counter(range(1, n + 1))  # exactly one settled line per row
    assert latest(final) == {
        row: "invalid" if row in invalid_rows else "sent" for row in range(1, n + 1)
    }


def test_sigint_drains_records_and_resume_completes(sandbox: Any, tmp_path: Path) -> None:
    n, concurrency, answered = 24, CONCURRENCY, ANSWERED
    rows = [(phone(row), f"점검 안내 {row}") for row in range(1, n + 1)]
    source = write_csv(tmp_path / "big.csv", rows)
    results_path = tmp_path / "big.results.csv"
    config = write_config(tmp_path / "msgsend.toml", sandbox, timeout=60)  # held: no timeout
    args = ("bulk", str(source), "--concurrency", str(concurrency), "--config", str(config))
    with run_until_held(sandbox, tmp_path, args, results_path) as (process, hold):
        process.send_signal(signal.SIGINT)
        # Once the run says it heard Ctrl-C, the messages in flight get their answers.
        assert wait_for(
            lambda: "finishing the messages in flight" in output(tmp_path, "first")[1],
            timeout=30,
        ), output(tmp_path, "first")
        started = time.monotonic()
        hold.release()
        process.wait(20)
        drained_in = time.monotonic() - started
    stdout, stderr = output(tmp_path, "first")
    assert process.returncode == 130, stderr
    assert drained_in < 10
    assert "interrupted" in stderr
    assert "bulk interrupted:" in stderr  # the summary
    processed = re.search(rf"bulk interrupted: (\d+) of {n} rows processed", stderr)
    assert processed is not None and int(processed.group(1)) == answered + concurrency, stderr
    assert "--resume" in stderr.split("bulk interrupted:")[1]  # how to go on
    assert "results: " + str(results_path) in stderr
    assert "\x1b[" not in stderr and "\x1b[" not in stdout
    assert re.search(rf"^bulk: \d+/{n} rows", stderr, re.MULTILINE)

    recorded = read_results(results_path)
    assert len(recorded) == len({line["row"] for line in recorded})  # one line per row
    recorded_sent = {line["recipient"] for line in recorded if line["status"] == "sent"}
    assert all(line["status"] == "sent" for line in recorded)
    counts = deliveries(sandbox)
    # every delivered row is recorded sent (the ones in flight too), and was delivered once
    assert set(counts) == recorded_sent
    assert set(counts.values()) == {1}
    assert set(hold.held) <= recorded_sent
    # the rows in flight were drained; rows never started have no line (and were not sent)
    assert len(recorded) == answered + concurrency

    resumed = invoke(
        "bulk", str(source), "--resume", "--json", "--concurrency", "8", "--config", str(config)
    )
    assert resumed.exit_code == 0, resumed.output
    document = one_json_document(resumed.stdout)
    assert document["skipped"] == len(recorded)
    assert document["sent"] == n - len(recorded)
    assert latest(read_results(results_path)) == dict.fromkeys(range(1, n + 1), "sent")
    # Ctrl-C loses nothing and duplicates nothing
    assert deliveries(sandbox) == collections.Counter(recipient for recipient, _ in rows)


# ---------------------------------------------------------------------------- output


def test_non_tty_output_is_plain_and_json_is_alone_on_stdout(sandbox: Any, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), f"m{i}") for i in range(6)])
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))

    plain = invoke("bulk", str(source), "--config", str(config))
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == ""  # everything for people goes to stderr
    assert "\x1b[" not in plain.stderr
    assert re.search(r"^bulk: 6/6 rows  sent 6\b", plain.stderr, re.MULTILINE), plain.stderr
    assert "bulk summary: 6 rows" in plain.stderr

    as_json = invoke(
        "bulk", str(source), "--json", "--results", str(tmp_path / "second.csv"),
        "--config", str(config),
    )  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    document = one_json_document(as_json.stdout)
    assert document["sent"] == 6
    assert "\x1b[" not in as_json.stderr
    assert re.search(r"^bulk: 6/6 rows", as_json.stderr, re.MULTILINE)
    assert "{" not in as_json.stderr  # the document is not repeated on stderr


def test_many_rows_with_a_few_bad_ones(sandbox: Any, tmp_path: Path) -> None:
    n = 60  # the bad rows are spread among many good ones, from the start to the very end
    bad: dict[int, tuple[Sequence[str], str]] = {
        4: (("02-123-4567", "유선"), "invalid recipient '02-123-4567'"),
        16: ((phone(16), ""), "empty message"),
        31: (("010-123-45", "짧은 번호"), "invalid recipient '010-123-45'"),
        47: ((phone(47), "가" * 1001), "message too long for KakaoTalk"),
        53: ((phone(53), "쉼표", "뒤"), "expected 2 fields, found 3"),
        59: (("전화번호 없음", "안녕"), "invalid recipient"),
    }
    rows = [bad[row][0] if row in bad else (phone(row), f"안내 {row}") for row in range(1, n + 1)]
    source = write_csv(tmp_path / "many.csv", rows)
    config = write_config(tmp_path / "msgsend.toml", sandbox)

    result = invoke("bulk", str(source), "--json", "--config", str(config))

    assert result.exit_code == 1, result.stderr[-2000:]
    document = one_json_document(result.stdout)
    results = read_results(tmp_path / "many.results.csv")
    assert len(results) == n
    invalid = {int(x["row"]): x["error"] for x in results if x["status"] == "invalid"}
    assert set(invalid) == set(bad)
    for row, (_, reason) in bad.items():
        assert reason in invalid[row], (row, invalid[row])
    assert {x["row"]: x["reason"] for x in document["invalid_rows"]} == invalid
    assert [x["row"] for x in document["invalid_rows"]] == sorted(bad)
    assert (document["sent"], document["invalid"], document["failed"]) == (n - len(bad), 6, 0)
    assert sandbox.count("kakaotalk", status=200) == n - len(bad) == sandbox.count()
    assert len(deliveries(sandbox)) == n - len(bad)


# ---------------------------------------------------------------------------- input


def test_cp949_input_with_a_template(sandbox: Any, tmp_path: Path) -> None:
    people = [
        ("김민준", phone(1), "A-1001"),
        ("이서연", phone(2), "A-1002"),
        ("박지호", phone(3), "B-7"),
    ]
    source = write_csv(
        tmp_path / "excel.csv", people, header=("이름 name", "phone", "order_no"), encoding="cp949"
    )
    data = source.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    template = "{이름 name}님, 주문 {order_no} 상품이 발송되었습니다."

    result = invoke("bulk", str(source), "--template", template, "--json", "--config", str(config))

    assert result.exit_code == 0, result.output
    document = one_json_document(result.stdout)
    assert document["encoding"] == "cp949"
    assert document["sent"] == 3
    received = {r.recipient: r.message for r in sandbox.delivered("kakaotalk")}
    assert received == {
        number: f"{name}님, 주문 {order} 상품이 발송되었습니다." for name, number, order in people
    }


def test_template_with_plain_name(sandbox: Any, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv", [("한지민", phone(1)), ("오현우", phone(2))], header=("name", "phone")
    )
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    result = invoke(
        "bulk", str(source), "--template", "{name}님, {{중요}} 안내", "--config", str(config)
    )
    assert result.exit_code == 0, result.output
    assert sorted(r.message for r in sandbox.delivered()) == sorted(
        ["한지민님, {중요} 안내", "오현우님, {중요} 안내"]
    )


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{name.attr}님", "only plain column names"),
        ("{name[0]}님", "only plain column names"),
        ("{nope}님", "names no column"),
        ("{name:>10}님", "format specs"),
    ],
)
def test_bad_template_exits_65_before_sending(
    sandbox: Any, tmp_path: Path, template: str, fragment: str
) -> None:
    source = write_csv(tmp_path / "in.csv", [("한지민", phone(1))], header=("name", "phone"))
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    result = invoke("bulk", str(source), "--template", template, "--config", str(config))
    assert result.exit_code == 65
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert sandbox.count() == 0
    assert not (tmp_path / "in.results.csv").exists()


def test_missing_file_exits_66(sandbox: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    result = invoke("bulk", str(tmp_path / "nope.csv"), "--config", str(config))
    assert result.exit_code == 66
    assert "no such file" in result.stderr
    assert sandbox.count() == 0


def test_cell_text_is_shown_masked_and_never_read_as_markup(sandbox: Any, tmp_path: Path) -> None:
    rows = [("[/x]", "닫는 태그"), ("[bold]010-9999-8888 ext", "번호"), (phone(1), "정상")]
    folder = tmp_path / "[" / "y]"  # the paths hold "[/y]", a closing tag
    folder.mkdir(parents=True)
    source = write_csv(folder / "in.csv", rows)
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    result = invoke("bulk", str(source), "--config", str(config))
    assert result.exit_code == 1, result.output  # not 70: the summary must not crash
    assert "row 1: invalid recipient '[/x]'" in result.stderr
    assert "row 2: invalid recipient '[bold]010-****-8888 ext'" in result.stderr
    assert "010-9999-8888" not in result.stderr
    assert f"results: {folder / 'in.results.csv'}" in result.stderr
    # the results file keeps the cell as it was, for the operator to fix
    lines = {int(x["row"]): x for x in read_results(folder / "in.results.csv")}
    assert lines[2]["recipient"] == "[bold]010-9999-8888 ext"
    assert lines[3]["status"] == "sent"


def test_via_column_picks_the_channel_per_row(sandbox: Any, tmp_path: Path) -> None:
    rows = [
        (phone(1), "m1", "sms"),
        (phone(2), "m2", "kakaotalk"),
        (phone(3), "m3", ""),  # the default channel
        (phone(4), "m4", " SMS "),
        (failing_phone(5), "m5", "sms"),  # KakaoTalk would fail: never asked
        (failing_phone(6), "m6", "kakaotalk"),  # falls back
        (phone(7), "m7", "fax"),
        (phone(8), "가" * 1001, "sms"),  # 2002 bytes in EUC-KR: too long for SMS
    ]
    source = write_csv(tmp_path / "in.csv", rows, header=("phone", "message", "via"))
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))

    first = invoke("bulk", str(source), "--config", str(config))

    assert first.exit_code == 1, first.output  # rows 7 and 8 are invalid
    lines = {int(x["row"]): x for x in read_results(tmp_path / "in.results.csv")}
    assert {row: (x["status"], x["channel"], x["fallback"]) for row, x in lines.items()} == {
        1: ("sent", "sms", "false"),
        2: ("sent", "kakaotalk", "false"),
        3: ("sent", "kakaotalk", "false"),
        4: ("sent", "sms", "false"),
        5: ("sent", "sms", "false"),
        6: ("sent", "sms", "true"),
        7: ("invalid", "", "false"),
        8: ("invalid", "", "false"),
    }
    assert "unknown channel" in lines[7]["error"]
    assert "SMS" in lines[8]["error"] and "2002" in lines[8]["error"]
    assert {r.recipient: r.provider for r in sandbox.delivered()} == {
        phone(1): "sms",
        phone(2): "kakaotalk",
        phone(3): "kakaotalk",
        phone(4): "sms",
        failing_phone(5): "sms",
        failing_phone(6): "sms",
    }
    assert failing_phone(5) not in {r.recipient for r in sandbox.received("kakaotalk")}

    # --via sets the channel of rows whose via cell is empty
    sandbox.reset()
    second = invoke(
        "bulk", str(source), "--via", "sms", "--results", str(tmp_path / "second.csv"),
        "--config", str(config),
    )  # fmt: skip
    assert second.exit_code == 1
    delivered = {r.recipient: r.provider for r in sandbox.delivered()}
    assert delivered[phone(3)] == "sms"
    assert delivered[phone(2)] == "kakaotalk"  # the cell wins over --via


def test_all_delivered_exits_zero_with_a_plain_results_file(sandbox: Any, tmp_path: Path) -> None:
    """The happy path: every row delivered (some by fallback) exits 0."""
    rows = [(phone(i), f"m{i}") for i in range(8)] + [(failing_phone(9), "fb")]
    source = write_csv(tmp_path / "in.csv", rows)
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))
    result = invoke("bulk", str(source), "--config", str(config))
    assert result.exit_code == 0, result.output
    data = (tmp_path / "in.results.csv").read_text(encoding="utf-8")
    assert data.startswith("\ufeff" + RESULTS_HEADER + "\n")
    assert "\x1b" not in data and "\r" not in data
