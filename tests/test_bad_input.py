"""The whole bad-input table of issue 11, run through the real command line.

Every case is something an operator, a cron job or an attacker can hand msgsend: a bad
configuration file, a bad environment value, bad standard input, a hostile CSV, a template
attack, a hostile argument. Each must end with its SPEC §8 exit code and one line naming what is
wrong and where, with nothing sent to a provider and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from msgsend.cli import app

EXIT_FAILED, EXIT_USAGE, EXIT_DATAERR, EXIT_NOINPUT, EXIT_IOERR, EXIT_CONFIG = 1, 2, 65, 66, 74, 78
SEND = ("send", "010-1234-5678", "hello")


@dataclass(frozen=True)
class Case:
    """One bad input: the command, what it is given, and what must come out."""

    id: str
    args: tuple[str, ...]
    code: int
    #: words of the one line that names the problem (``msgsend: error: ...`` or ``row N: ...``)
    words: str
    config: str | None = None
    config_mode: int = 0o600
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    csv: bytes | None = None


def _csv(*rows: str, header: str = "phone,message") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- bad configurations

CONFIG_CASES = [
    Case("multiplier-1e308", SEND, EXIT_CONFIG, "retry.multiplier: expected a number from 1 to 10",
         config="[retry]\nmultiplier = 1e308\n"),
    Case("timeout-1e308", SEND, EXIT_CONFIG, "kakaotalk.timeout: expected a number greater than 0 "
         "and at most 300 (seconds), got 1e+308", config="[kakaotalk]\ntimeout = 1e308\n"),
    Case("timeout-zero", SEND, EXIT_CONFIG, "sms.timeout: expected a number greater than 0",
         config="[sms]\ntimeout = 0\n"),
    Case("delay-over-an-hour", SEND, EXIT_CONFIG, "retry.max-delay: expected a number from 0 to "
         "3600000 (milliseconds)", config="[retry]\nmax-delay = 86400000\n"),
    Case("fractional-per-second", SEND, EXIT_CONFIG, "requests-per-second: expected a whole "
         "number, got 2.5; write a fractional rate as requests-per-minute",
         config="[sms.rate-limit]\nrequests-per-second = 2.5\n"),
    Case("rate-over-1e6", SEND, EXIT_CONFIG, "from 1 to 1000000",
         config="[kakaotalk.rate-limit]\nrequests-per-second = 10000000\n"),
    Case("both-rates", SEND, EXIT_CONFIG, "set requests-per-minute or requests-per-second, not "
         "both", config="[sms.rate-limit]\nrequests-per-minute = 1\nrequests-per-second = 1\n"),
    Case("concurrency-huge", ("bulk", "{csv}"), EXIT_CONFIG, "bulk.concurrency: expected a whole "
         "number from 1 to 256", config="[bulk]\nconcurrency = 100000\n",
         csv=_csv("010-1234-5678,hi")),
    Case("typo-key", SEND, EXIT_CONFIG, "kakaotalk.base_url: unknown key; did you mean "
         "'kakaotalk.base-url'?", config='[kakaotalk]\nbase_url = "http://x"\n'),
    Case("unknown-table", SEND, EXIT_CONFIG, "kakao: unknown key", config="[kakao]\nx = 1\n"),
    Case("string-for-number", SEND, EXIT_CONFIG, "retry.max-attempts: expected a whole number, "
         "got 'three'", config='[retry]\nmax-attempts = "three"\n'),
    Case("bool-as-string", SEND, EXIT_CONFIG, "fallback.enabled: expected true or false",
         config='[fallback]\nenabled = "yes"\n'),
    Case("nan", SEND, EXIT_CONFIG, "retry.multiplier: expected a number",
         config="[retry]\nmultiplier = nan\n"),
    Case("bad-toml", SEND, EXIT_CONFIG, "not valid TOML", config="[retry\nmultiplier = 2\n"),
    Case("duplicate-key", SEND, EXIT_CONFIG, "not valid TOML",
         config="[retry]\nmultiplier = 2\nmultiplier = 3\n"),
    Case("table-for-value", SEND, EXIT_CONFIG, "expected a table ([kakaotalk])",
         config='kakaotalk = "http://x"\n'),
    Case("bad-url", SEND, EXIT_CONFIG, "alerts.webhook-url: expected a URL starting with http://",
         config='[alerts]\nwebhook-url = "hooks.example.com/x"\n'),
    Case("bad-port", SEND, EXIT_CONFIG, "sms.base-url: bad port",
         config='[sms]\nbase-url = "http://localhost:99999"\n'),
    Case("redis-without-url", SEND, EXIT_CONFIG, "limiter.redis-url: store = \"redis\" needs "
         "redis-url", env={"MSGSEND_LIMITER_STORE": "redis"}),
    Case("quiet-hours-shape", SEND, EXIT_CONFIG, "bulk.quiet-hours: expected \"HH:MM-HH:MM\"",
         config='[bulk]\nquiet-hours = "9pm-8am"\n'),
    Case("timezone-unknown", SEND, EXIT_CONFIG, "bulk.timezone: expected an IANA time zone",
         config='[bulk]\ntimezone = "Seoul"\n'),
    Case("timezone-path", SEND, EXIT_CONFIG, "bulk.timezone: expected an IANA time zone",
         config='[bulk]\ntimezone = "../../../etc/passwd"\n'),
    Case("throttle-2xx", SEND, EXIT_CONFIG, "sms.throttle-statuses: expected each item to be a "
         "whole number from 400 to 599", config="[sms]\nthrottle-statuses = [200]\n"),
    Case("throttle-not-list", SEND, EXIT_CONFIG, "expected a list of whole numbers",
         config="[sms]\nthrottle-statuses = 429\n"),
    Case("apprise-not-url", SEND, EXIT_CONFIG, "alerts.apprise-urls: expected an Apprise URL",
         config='[alerts]\napprise-urls = ["ops@example.com"]\n'),
    Case("breaker-rate-zero", SEND, EXIT_CONFIG, "failure-rate-threshold: expected a number "
         "greater than 0 and at most 1", config="[circuit-breaker]\nfailure-rate-threshold = 0\n"),
    Case("minimum-over-window", SEND, EXIT_CONFIG, "circuit-breaker.minimum-calls: expected at "
         "most window-size (20), got 50", config="[circuit-breaker]\nminimum-calls = 50\n"),
    Case("secret-in-bad-url", SEND, EXIT_CONFIG, "limiter.redis-url: expected a URL starting with "
         "redis://", config='[limiter]\nredis-url = "http://user:s3cr3t@cache:6379"\n'),
    Case("secret-in-bad-env-url", SEND, EXIT_CONFIG, "alerts.webhook-url: expected a URL",
         env={"MSGSEND_ALERTS_WEBHOOK_URL": "ftp://ops:s3cr3t@hooks.example.com/x"}),
    Case("secret-in-a-group-readable-file", ("config", "check"), EXIT_CONFIG,
         "kakaotalk.timeout", config='[sms.auth]\npassword = "s3cr3t"\n[kakaotalk]\ntimeout = -1\n',
         config_mode=0o644),
    Case("format-attribute-placeholder", SEND, EXIT_CONFIG, "sms.request.fields.to: unknown "
         "placeholder {recipient.__class__}",
         config='[sms.request]\nfields = {to = "{recipient.__class__}"}\n'),
    Case("format-header-injection", SEND, EXIT_CONFIG, "sms.request.headers.X-Evil: a header "
         "value must be one line", config='[sms.request]\nheaders = {X-Evil = "a\\r\\nX: b"}\n'),
    Case("format-header-not-string", SEND, EXIT_CONFIG, "sms.request.headers: expected a table "
         "of strings", config="[sms.request]\nheaders = {X = 1}\n"),
    Case("format-bearer-without-token", SEND, EXIT_CONFIG, 'sms.auth.type: "bearer" needs a '
         "token", config='[sms.auth]\ntype = "bearer"\n'),
    Case("format-success-5xx", SEND, EXIT_CONFIG, "sms.request.success-statuses: expected each "
         "item to be a whole number from 200 to 299",
         config="[sms.request]\nsuccess-statuses = [500]\n"),
    Case("missing-config", ("send", "010-1234-5678", "hi", "--config", "{dir}/nope.toml"),
         EXIT_CONFIG, "nope.toml: no such configuration file"),
]  # fmt: skip

# --------------------------------------------------------------------------- bad environment

ENV_CASES = [
    Case("env-typo", SEND, EXIT_CONFIG, "environment MSGSEND_KAKAOTALK_BASEURL: unknown variable; "
         "did you mean MSGSEND_KAKAOTALK_BASE_URL?", env={"MSGSEND_KAKAOTALK_BASEURL": "http://x"}),
    Case("env-unknown", SEND, EXIT_CONFIG, "environment MSGSEND_VERBOSE: unknown variable",
         env={"MSGSEND_VERBOSE": "1"}),
    Case("env-multiplier", SEND, EXIT_CONFIG, "environment MSGSEND_RETRY_MULTIPLIER: "
         "retry.multiplier: expected a number from 1 to 10, got '1e308'",
         env={"MSGSEND_RETRY_MULTIPLIER": "1e308"}),
    Case("env-not-a-number", SEND, EXIT_CONFIG, "MSGSEND_SMS_TIMEOUT: sms.timeout: expected a "
         "number", env={"MSGSEND_SMS_TIMEOUT": "soon"}),
    Case("env-bool", SEND, EXIT_CONFIG, "MSGSEND_FALLBACK_ENABLED: fallback.enabled: expected "
         "true or false", env={"MSGSEND_FALLBACK_ENABLED": "maybe"}),
    Case("env-choice", SEND, EXIT_CONFIG, "MSGSEND_LIMITER_STRATEGY: limiter.strategy: expected "
         "one of", env={"MSGSEND_LIMITER_STRATEGY": "leaky"}),
    Case("env-json-broken", SEND, EXIT_CONFIG, "MSGSEND_SMS_THROTTLE_STATUSES: "
         "sms.throttle-statuses: expected JSON", env={"MSGSEND_SMS_THROTTLE_STATUSES": "[429,"}),
    Case("env-json-wrong-shape", SEND, EXIT_CONFIG, "expected a list of strings",
         env={"MSGSEND_ALERTS_APPRISE_URLS": '{"a": "b"}'}),
    Case("env-rate-fraction", SEND, EXIT_CONFIG, "expected a whole number, got '0.5'",
         env={"MSGSEND_KAKAOTALK_RATE_LIMIT_REQUESTS_PER_SECOND": "0.5"}),
    Case("env-format-not-json", SEND, EXIT_CONFIG, "environment MSGSEND_SMS_REQUEST_FIELDS: "
         "sms.request.fields: expected JSON", env={"MSGSEND_SMS_REQUEST_FIELDS": "to={recipient}"}),
    Case("env-format-token-in-error", SEND, EXIT_CONFIG, "expected a table of strings",
         env={"MSGSEND_SMS_REQUEST_HEADERS": '{"Authorization": ["Bearer s3cr3t"]}'}),
    Case("env-config-missing", SEND, EXIT_CONFIG, "no such configuration file (named by "
         "MSGSEND_CONFIG)", env={"MSGSEND_CONFIG": "/nonexistent/msgsend.toml"}),
]  # fmt: skip

# --------------------------------------------------------------------------- send: stdin, args

SEND_CASES = [
    Case("stdin-not-utf8", ("send", "010-1234-5678", "-"), EXIT_DATAERR,
         "standard input is not UTF-8 text: byte 0xFF at offset 6", stdin=b"hello \xff world"),
    Case("stdin-cp949", ("send", "010-1234-5678", "-"), EXIT_DATAERR,
         "standard input is not UTF-8 text: byte 0xBE at offset 0", stdin="안녕".encode("cp949")),
    Case("stdin-escape", ("send", "010-1234-5678", "-"), EXIT_DATAERR,
         "message contains U+001B (ESCAPE) at character 3", stdin=b"hi\x1b[2J"),
    Case("stdin-bom-then-escape", ("send", "010-1234-5678", "-"), EXIT_DATAERR,
         "message contains U+001B (ESCAPE) at character 3", stdin=b"\xef\xbb\xbfhi\x1b[31m"),
    Case("stdin-too-long", ("send", "010-1234-5678", "-"), EXIT_DATAERR,
         "standard input is longer than 1,048,576 bytes", stdin=b"x" * (1024 * 1024 + 1)),
    Case("stdin-empty", ("send", "010-1234-5678", "-"), EXIT_DATAERR, "empty message", stdin=b""),
    Case("arg-nul", ("send", "010-1234-5678", "a\x00b"), EXIT_DATAERR,
         "message contains U+0000 (NUL) at character 2"),
    Case("arg-bel", ("send", "010-1234-5678", "ring\x07"), EXIT_DATAERR, "U+0007 (BEL)"),
    Case("arg-rlo", ("send", "010-1234-5678", "pay\u202eexe.txt"), EXIT_DATAERR,
         "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 4"),
    Case("arg-isolate", ("send", "010-1234-5678", "x\u2067y"), EXIT_DATAERR,
         "U+2067 (RIGHT-TO-LEFT ISOLATE)"),
    Case("arg-cr", ("send", "010-1234-5678", "a\rb"), EXIT_DATAERR, "U+000D (CARRIAGE RETURN)"),
    Case("arg-not-utf8", ("send", "010-1234-5678", "hi\udcff"), EXIT_DATAERR,
         "message is not UTF-8 text: byte 0xFF at character 3"),
    Case("too-long-kakaotalk", ("send", "010-1234-5678", "가" * 1001), EXIT_DATAERR,
         "message too long for KakaoTalk: 1001 characters"),
    Case("no-euc-kr-for-sms", ("send", "010-1234-5678", "😀", "--via", "sms"), EXIT_DATAERR,
         "has no EUC-KR encoding"),
    Case("bad-recipient", ("send", "010-12-5678", "hi"), EXIT_DATAERR, "invalid recipient"),
    Case("recipient-with-escape", ("send", "010-1234-5678\x1b[2J", "hi"), EXIT_DATAERR,
         "invalid recipient '010-1234-5678\\x1b[2J'"),
    Case("via-unknown", ("send", "010-1234-5678", "hi", "--via", "fax"), EXIT_USAGE, "fax"),
    Case("log-format", ("send", "010-1234-5678", "hi", "--log-format", "xml"), EXIT_USAGE, "xml"),
    Case("log-file-in-missing-dir", ("send", "010-1234-5678", "hi", "--log-file",
         "{dir}/no/such/dir/x.log"), EXIT_USAGE, "cannot write"),
]  # fmt: skip

# --------------------------------------------------------------------------- hostile CSV files

CSV_CASES = [
    Case("csv-missing", ("bulk", "{dir}/none.csv"), EXIT_NOINPUT, "none.csv: no such file"),
    Case("csv-directory", ("bulk", "{dir}"), EXIT_NOINPUT, "is a directory"),
    Case("csv-device", ("bulk", "/dev/null"), EXIT_NOINPUT, "/dev/null: not a regular file"),
    Case("csv-binary", ("bulk", "{csv}"), EXIT_DATAERR, "not UTF-8 or CP949/EUC-KR text",
         csv=b"\x00\x01\x02\x03PK\x03\x04" + bytes(range(256)) * 4),
    Case("csv-empty", ("bulk", "{csv}"), EXIT_DATAERR, "the file is empty", csv=b""),
    Case("csv-no-recipient-column", ("bulk", "{csv}"), EXIT_DATAERR, "recipient column",
         csv=_csv("a,b", header="name,message")),
    Case("csv-no-message-column", ("bulk", "{csv}"), EXIT_DATAERR, "no message column",
         csv=_csv("010-1234-5678,x", header="phone,name")),
    Case("csv-escape-in-message", ("bulk", "{csv}"), EXIT_FAILED,
         "row 1: message contains U+001B (ESCAPE) at character 3",
         csv=_csv("010-1234-5678,hi\x1b]0;pwned\x07")),
    Case("csv-rlo-in-message", ("bulk", "{csv}"), EXIT_FAILED,
         "row 1: message contains U+202E (RIGHT-TO-LEFT OVERRIDE)",
         csv=_csv("010-1234-5678,see \u202etxt.exe")),
    Case("csv-nul", ("bulk", "{csv}"), EXIT_FAILED, "row 1: NUL byte in the record",
         csv=_csv("010-1234-5678,a\x00b")),
    Case("csv-field-over-1mib", ("bulk", "{csv}"), EXIT_FAILED,
         "row 1: a field is longer than 1,048,576 characters (line 2)",
         csv=_csv("010-1234-5678," + "x" * (1024 * 1024 + 10))),
    Case("csv-bad-number", ("bulk", "{csv}"), EXIT_FAILED, "row 1: invalid recipient",
         csv=_csv("=HYPERLINK(\"http://evil\"),hi")),
    Case("csv-extra-field", ("bulk", "{csv}"), EXIT_FAILED, "row 1: malformed CSV record",
         csv=_csv("010-1234-5678,a,b")),
    Case("csv-unknown-via", ("bulk", "{csv}"), EXIT_FAILED, "row 1: unknown channel",
         csv=_csv("010-1234-5678,hi,fax", header="phone,message,via")),
    Case("csv-not-decodable", ("bulk", "{csv}", "--encoding", "ascii"), EXIT_DATAERR,
         "cannot be decoded as ascii",
         csv=_csv("010-1234-5678,안녕")),
    Case("results-cannot-be-opened", ("bulk", "{csv}", "--results", "{dir}/no/such/r.csv"),
         EXIT_NOINPUT, "cannot open the results file", csv=_csv("010-1234-5678,hi")),
    Case("results-on-a-full-device", ("bulk", "{csv}", "--results", "/dev/full"), EXIT_IOERR,
         "/dev/full: cannot write the results file", csv=_csv("010-1234-5678,hi")),
    Case("results-on-a-full-device-resumed", ("bulk", "{csv}", "--results", "/dev/full",
         "--resume"), EXIT_IOERR, "/dev/full: cannot write", csv=_csv("010-1234-5678,hi")),
    Case("csv-unknown-encoding", ("bulk", "{csv}", "--encoding", "klingon"), EXIT_USAGE,
         "klingon", csv=_csv("010-1234-5678,hi")),
    Case("dry-run-and-resume", ("bulk", "{csv}", "--dry-run", "--resume"), EXIT_USAGE,
         "--dry-run and --resume exclude each other", csv=_csv("010-1234-5678,hi")),
    Case("template-and-message-column", ("bulk", "{csv}", "--template", "hi",
         "--message-column", "message"), EXIT_USAGE, "exclude each other",
         csv=_csv("010-1234-5678,hi")),
]  # fmt: skip

# --------------------------------------------------------------------------- template attacks

TEMPLATE_CSV = _csv("010-1234-5678,Kim", header="phone,name")
TEMPLATE_CASES = [
    Case(f"template-{name}", ("bulk", "{csv}", "--template", template), EXIT_DATAERR, words,
         csv=TEMPLATE_CSV)
    for name, template, words in [
        ("attribute", "{name.__class__}", "{name.__class__}"),
        ("index", "{name[0]}", "{name[0]}"),
        ("format-spec", "{name:>99999999}", "{name:>99999999}"),
        ("conversion", "{name!r}", "{name!r}"),
        ("positional", "{}", "{}"),
        ("numbered", "{0}", "{0}"),
        ("unknown-column", "{surname}", "surname"),
        ("unbalanced-open", "hi {name", "template"),
        ("unbalanced-close", "hi name}", "template"),
        ("empty", "", "the template is empty"),
        ("escape-char", "hi\x1b[2J{name}", "U+001B (ESCAPE)"),
    ]
]  # fmt: skip

ALL_CASES = CONFIG_CASES + ENV_CASES + SEND_CASES + CSV_CASES + TEMPLATE_CASES


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Any]:
    """One sandbox for the module's cases: none changes its settings (each starts it empty)."""
    from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions

    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None), sms=ProviderOptions(rate_limit=None)
    )
    with Sandbox(options) as running:
        yield running


@pytest.fixture
def provider_env(shared_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point both providers at the sandbox through the environment, memory limiter."""
    sandbox = shared_sandbox
    sandbox.reset()
    monkeypatch.setenv("MSGSEND_KAKAOTALK_BASE_URL", sandbox.kakaotalk_url)
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", sandbox.sms_url)
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory")
    yield sandbox


def _materialise(case: Case, tmp_path: Path) -> list[str]:
    """Write the case's files; return its arguments with the paths filled in."""
    csv_path = tmp_path / "input.csv"
    if case.csv is not None:
        csv_path.write_bytes(case.csv)
    args = [
        arg.replace("{csv}", str(csv_path)).replace("{dir}", str(tmp_path)) for arg in case.args
    ]
    if case.config is not None:
        config = tmp_path / "msgsend.toml"
        config.write_text(case.config, encoding="utf-8")
        config.chmod(case.config_mode)
        args += ["--config", str(config)]
    return args


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.id for case in ALL_CASES])
def test_bad_input_gets_its_exit_code_one_line_and_sends_nothing(
    case: Case, provider_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    args = _materialise(case, tmp_path)
    result = CliRunner().invoke(app, args, input=case.stdin)
    output = result.output
    assert "Traceback" not in output
    assert "s3cr3t" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == case.code, output
    assert provider_env.received() == []
    if case.code == EXIT_USAGE:
        assert case.words in output
        return
    lines = [line for line in result.stderr.splitlines() if case.words in line]
    assert lines, result.stderr
    if case.code == EXIT_FAILED:  # bulk: the row is recorded invalid, the run goes on
        assert any(line.startswith("row ") for line in lines), result.stderr
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("msgsend: error: ")]
    assert len(errors) == 1, result.stderr
    assert case.words in errors[0]
    assert all(ch.isprintable() for ch in errors[0])


# --------------------------------------------------------------------------- the real process

# One case per way bytes enter a real process: standard input, an argument (what msgsend says
# about the text, a BOM on standard input included, is the table's above).


@pytest.mark.parametrize(
    ("argv", "stdin", "words"),
    [
        ([b"send", b"010-1234-5678", b"-"], b"caf\xe9", b"byte 0xE9 at offset 3"),
        ([b"send", b"010-1234-5678", b"bad \xff byte"], b"", b"message is not UTF-8 text"),
    ],
)
def test_bytes_that_are_not_utf8_exit_65_in_a_real_process(
    provider_env: Any, argv: list[bytes], stdin: bytes, words: bytes
) -> None:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"msgsend", *argv],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_DATAERR, done.stderr
    assert b"Traceback" not in done.stderr
    assert words in done.stderr
    assert provider_env.received() == []


def test_formula_cells_are_sent_unaltered_and_written_escaped(
    provider_env: Any, tmp_path: Path
) -> None:
    """A formula is a valid message: the provider gets it as written, the files get it inert."""
    import csv

    source = tmp_path / "input.csv"
    source.write_bytes(
        _csv('010-1234-5678,"=HYPERLINK(""http://evil"",""x"")"', "010-1234-5679,@SUM(1+1)")
    )
    preview = CliRunner().invoke(app, ["bulk", str(source), "--dry-run"])
    assert preview.exit_code == 0, preview.output
    preview_file = tmp_path / "input.preview.csv"
    assert preview_file.stat().st_mode & 0o777 == 0o600
    with preview_file.open(encoding="utf-8-sig", newline="") as handle:
        messages = [row["message"] for row in csv.DictReader(handle)]
    assert messages == ['\'=HYPERLINK("http://evil","x")', "'@SUM(1+1)"]
    assert provider_env.received() == []

    result = CliRunner().invoke(app, ["bulk", str(source)])
    assert result.exit_code == 0, result.output
    assert sorted(r.message for r in provider_env.received()) == [
        '=HYPERLINK("http://evil","x")',
        "@SUM(1+1)",
    ]
    assert (tmp_path / "input.results.csv").stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- a hostile provider

HOSTILE_BODY = (
    b'{"error": "bad\x1b[2J\x1b]0;owned\x07 request\r\n2026-11-30 INFO forged line \xe2\x80\xae'
    b'txt.exe", "echo": "Authorization: Basic YXV0b2V2ZXI6NTY3OA=="}'
)


@pytest.fixture
def hostile_provider() -> Iterator[str]:
    """A provider on 127.0.0.1 answering 400 with control characters and an echoed credential."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(HOSTILE_BODY)))
            self.end_headers()
            self.wfile.write(HOSTILE_BODY)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_provider_text_reaches_terminal_and_log_escaped(
    hostile_provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", hostile_provider)
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory")
    log_file = tmp_path / "run.log"
    result = CliRunner().invoke(
        app,
        ["send", "010-1234-5678", "hi", "--via", "sms", "-v", "--log-file", str(log_file)],
    )
    assert result.exit_code == EXIT_FAILED, result.output
    for text in (result.output, log_file.read_text(encoding="utf-8")):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "\r" not in text
        assert "YXV0b2V2ZXI6NTY3OA" not in text  # the echoed credential
        assert "\\x1b[2J" in text
    assert "forged line" in result.stderr
    assert not any(line.startswith("2026-11-30 INFO forged") for line in result.stderr.splitlines())
