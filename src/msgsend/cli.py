"""The ``msgsend`` command line: parse, call the library, render, choose the exit code.

Only this module imports typer and rich. Heavy modules (rich, the sandbox, the limiter's
stores, prometheus_client) are imported inside the commands that use them, so that
``msgsend ping`` starts quickly; ``msgsend --version`` is answered before this module is
imported (``msgsend.__main__``, the console script).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from . import __version__
from ._typerfast import install as _install_plain_options
from ._typerfast import install_plain_help as _install_plain_help
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_USAGE,
    ConfigError,
    InputError,
    LimiterUnavailableError,
    MsgsendError,
    exit_code_for,
)
from .redact import redact_text, redact_url

# typer 0.2x parses every option through pydantic, whose import alone costs about what
# `import requests` does: parse msgsend's plain options without it (start-up budget, see
# docs/benchmarks.md). Same values and error messages; a no-op on a typer it does not know.
_install_plain_options()
_install_plain_help()

if TYPE_CHECKING:
    from rich.console import Console

    from .alerts import Alerter
    from .bulk import BulkOptions
    from .client import Limiter, Sender
    from .config import Config
    from .csvinput import CsvInfo
    from .events import Events
    from .metrics import Metrics
    from .outage import QuietHours
    from .sandbox import Sandbox

__all__ = ["app", "main"]

_APP_SETTINGS: dict[str, Any] = {
    "name": "msgsend",
    "help": "Send text messages to Korean mobile numbers: KakaoTalk first, SMS as the fallback.",
    "no_args_is_help": True,
    "add_completion": True,
    "pretty_exceptions_enable": False,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}
app = typer.Typer(**_APP_SETTINGS)
config_app = typer.Typer(help="Write, show and check the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


# ---------------------------------------------------------------------------- shared options

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Configuration file (TOML).", show_default=False)
]
VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="-v: every attempt; -vv: debug.")
]
LogFileOpt = Annotated[
    Path | None,
    typer.Option("--log-file", help="Also write the log to this file.", show_default=False),
]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", help="Log format: text or json.", metavar="text|json")
]
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        help="Write Prometheus metrics here at exit (node_exporter textfile collector).",
        show_default=False,
    ),
]
PushgatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--pushgateway", help="Push metrics to this Pushgateway URL at exit.", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
SandboxOpt = Annotated[
    bool,
    typer.Option(
        "--sandbox", help="Start fake providers in-process on free ports and send to them."
    ),
]
ViaOpt = Annotated[
    str, typer.Option("--via", help="Channel: kakaotalk or sms.", metavar="kakaotalk|sms")
]
NoFallbackOpt = Annotated[bool, typer.Option("--no-fallback", help="Do not fall back to SMS.")]
OverflowOpt = Annotated[
    bool,
    typer.Option(
        "--overflow",
        help="Send by SMS at once when KakaoTalk's rate limit is full (or \\[fallback] overflow).",
    ),
]


@dataclass
class Common:
    """The options every command takes."""

    config: Path | None = None
    verbose: int = 0
    log_file: Path | None = None
    log_format: str = "text"
    metrics_file: Path | None = None
    pushgateway: str | None = None


def _new_events() -> Events:
    # Imported here: the events' dataclasses are 15 ms of the start-up of the commands that
    # send nothing (--help, sandbox, config init).
    from .events import Events

    return Events()


@dataclass
class Run:
    """What one command run holds open: logging, alerts, metrics, an embedded sandbox."""

    common: Common
    config: Config | None = None
    alerter: Alerter | None = None
    metrics: Metrics | None = None
    sandbox: Sandbox | None = None
    #: what the sender and the bulk run emit; alerts, metrics and progress listen
    events: Events = field(default_factory=_new_events)
    closers: list[Any] = field(default_factory=list)
    #: whether every message was delivered (``msgsend_last_run_success``); commands set it
    ok: bool = True
    #: the command's start/end log lines (None for a library-style use)
    command: Command | None = None
    _console: Console | None = None

    @property
    def console(self) -> Console:
        """Return the stderr console, importing rich on first use only."""
        if self._console is None:
            self._console = _stderr_console()
        return self._console


def _stderr_console() -> Console:
    from rich.console import Console

    # Not a terminal (cron mail, a log file): wide enough that tables are not squeezed.
    width = None if sys.stderr.isatty() else 120
    return Console(stderr=True, highlight=False, soft_wrap=True, width=width)


def _stderr_may_be_terminal() -> bool:
    """Whether rich may draw on stderr: a terminal, or the variables that make rich say so.

    Plain progress lines need no console, so a run under cron or with ``--json`` piped away
    does not import rich (~20 ms of a bulk run's start).
    """
    return "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ or sys.stderr.isatty()


def _stdout_console() -> Console:
    from rich.console import Console

    width = None if sys.stdout.isatty() else 120
    return Console(highlight=False, soft_wrap=True, width=width)


def _error(message: str) -> None:
    sys.stderr.write(f"msgsend: error: {redact_text(message)}\n")
    sys.stderr.flush()


def _raise_errors() -> bool:
    return os.environ.get("MSGSEND_RAISE_ERRORS", "") not in ("", "0")


@contextmanager
def _errors_to_exit_codes(json_output: bool = False) -> Iterator[None]:
    """Map every error to a message on stderr and the exit code of SPEC §8, in one place.

    With ``--json`` the error is also the one JSON document on stdout, so that a script that
    parses stdout always reads something: ``{"error": {"message": ..., "exit_code": N}}``.
    """
    try:
        yield
    except typer.Exit:
        raise
    except typer.BadParameter as exc:
        if json_output:
            _print_json_error(exc.format_message(), EXIT_USAGE)
        raise
    except MsgsendError as exc:
        if _raise_errors():
            raise
        _error(str(exc))
        code = exit_code_for(exc)
        if json_output:
            _print_json_error(str(exc), code)
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        sys.stderr.write("\nmsgsend: interrupted\n")
        if json_output:
            _print_json_error("interrupted", EXIT_INTERRUPTED)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if _raise_errors():
            raise
        message = f"internal error: {type(exc).__name__}: {exc}"
        _error(f"{message} (set MSGSEND_RAISE_ERRORS=1 to see the traceback)")
        if json_output:
            _print_json_error(message, EXIT_SOFTWARE)
        raise typer.Exit(EXIT_SOFTWARE) from None


def _print_json_error(message: str, code: int) -> None:
    _print_json({"error": {"message": redact_text(message), "exit_code": code}})


@dataclass
class Command:
    """One command run as the log file sees it: a start line and an end line (cron-grade).

    Both are INFO records on ``msgsend.run``, written to ``--log-file`` even without ``-v``.
    """

    name: str
    started_at: float = field(default_factory=time.monotonic)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    input: str | None = None
    rows: int | None = None
    #: the outcome per status (bulk) or per message (send), for the end line
    counts: dict[str, int] = field(default_factory=dict)
    _logged_start: bool = False

    def start(self, input: str | None = None, rows: int | None = None) -> None:
        """Log the start line: the command, its input file and how many rows it holds."""
        self.input, self.rows = input if input is not None else self.input, rows
        if self._logged_start:
            return
        self._logged_start = True
        what = f" {self.input}" if self.input else ""
        size = f" ({self.rows} rows)" if self.rows is not None else ""
        _run_log().info(
            "msgsend %s%s%s started (run %s)",
            self.name,
            what,
            size,
            self.run_id,
            extra={
                "event": "run-started",
                "command": self.name,
                "input": self.input,
                "rows": self.rows,
                "run_id": self.run_id,
            },
        )

    def finish(self, exit_code: int) -> None:
        """Log the end line: counts per status, duration and exit code."""
        self.start()
        elapsed = time.monotonic() - self.started_at
        counts = ", ".join(f"{status} {n}" for status, n in self.counts.items())
        _run_log().info(
            "msgsend %s finished: exit %d in %.1f s%s (run %s)",
            self.name,
            exit_code,
            elapsed,
            f"; {counts}" if counts else "",
            self.run_id,
            extra={
                "event": "run-finished",
                "command": self.name,
                "input": self.input,
                "exit_code": exit_code,
                "duration_s": round(elapsed, 3),
                "counts": dict(self.counts),
                "run_id": self.run_id,
            },
        )


def _run_log() -> logging.Logger:
    from .logs import RUN_LOGGER

    return logging.getLogger(RUN_LOGGER)


@contextmanager
def _command(
    name: str, common: Common, *, json_output: bool = False, input: str | None = None
) -> Iterator[Command]:
    """Run a command: logging first, errors mapped to exit codes, a start and an end line."""
    command = Command(name, input=input)
    with _errors_to_exit_codes(json_output):
        _setup_logging(common)
    code = EXIT_SOFTWARE
    try:
        with _errors_to_exit_codes(json_output):
            yield command
        code = EXIT_OK
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    except typer.BadParameter:
        code = EXIT_USAGE
        raise
    finally:
        with suppress(Exception):
            command.finish(code)


def _setup_logging(common: Common) -> None:
    from .logs import setup_logging

    _check_common(common)
    try:
        setup_logging(
            common.verbose,
            log_file=common.log_file,
            log_format=common.log_format,
            rich_console=_stderr_console() if sys.stderr.isatty() else None,
        )
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {common.log_file}: {exc.strerror or exc}", param_hint="--log-file"
        ) from None


def _check_common(common: Common) -> None:
    if common.log_format not in ("text", "json"):
        raise typer.BadParameter(
            f"{common.log_format!r} is not text or json", param_hint="--log-format"
        )


@contextmanager
def _run(
    common: Common,
    *,
    command: Command | None = None,
    need_config: bool = True,
    overrides: dict[str, Any] | None = None,
    sandbox: bool = False,
) -> Iterator[Run]:
    """Set up configuration, alerts and metrics; tear them down at exit."""
    run = Run(common=common, command=command)
    success = False
    try:
        if need_config:
            run.config = _load_config(common, overrides, run)
            if sandbox:
                run.sandbox, run.config = _start_sandbox(run.config, run)
            from .alerts import Alerter, alert_listener

            apprise_urls = run.config.alerts.apprise_urls
            if apprise_urls and importlib.util.find_spec("apprise") is None:
                raise ConfigError(
                    "is set but apprise is not installed: pip install 'msgsend[apprise]'",
                    source=_config_source(run.config),
                    key="alerts.apprise-urls",
                )
            run.alerter = Alerter(
                run.config.alerts.webhook_url,
                context=_alert_context(command),
                apprise_urls=apprise_urls,
            )
            run.events.subscribe(alert_listener(run.alerter))
            if common.metrics_file or common.pushgateway:
                from .metrics import Metrics
                from .models import CHANNELS

                limits = {
                    name: (
                        run.config.provider(name).rate_limit.count,
                        run.config.provider(name).rate_limit.period,
                    )
                    for name in CHANNELS
                }
                run.metrics = Metrics(limits=limits)
                run.events.subscribe(run.metrics.on_event)
        yield run
        success = run.ok
    finally:
        _finish(run, success)


def _alert_context(command: Command | None) -> dict[str, str | None]:
    """Return what every alert of this run carries: host, run id and input file name."""
    import socket

    return {
        "host": socket.gethostname(),
        "run_id": command.run_id if command is not None else None,
        "input": Path(command.input).name if command is not None and command.input else None,
    }


def _load_config(common: Common, overrides: dict[str, Any] | None, run: Run) -> Config:
    from .config import load_config

    config = load_config(common.config, overrides=overrides)
    import logging

    for warning in config.warnings:
        logging.getLogger("msgsend.config").warning(warning)
    return config


def _start_sandbox(config: Config, run: Run) -> tuple[Sandbox, Config]:
    """Start fake providers on free ports and point ``config`` at them (memory limiter)."""
    from .sandbox import start_for_config

    sandbox, config = start_for_config(config, kakaotalk_fail_suffixes=SANDBOX_KAKAOTALK_FAILS)
    run.closers.append(sandbox.close)
    line = (
        f"sandbox: KakaoTalk at {sandbox.kakaotalk_url}, SMS at {sandbox.sms_url} "
        f"(KakaoTalk answers 503 for numbers ending in {', '.join(SANDBOX_KAKAOTALK_FAILS)})"
    )
    if _stderr_may_be_terminal():
        run.console.print(f"[dim]{line}[/dim]")
    else:
        sys.stderr.write(line + "\n")
    return sandbox, config


#: seconds a command waits at exit for queued alert deliveries (a hanging webhook)
ALERT_FLUSH_TIMEOUT = 5.0

#: ``--sandbox`` makes KakaoTalk fail for these number endings, so that fallback shows.
SANDBOX_KAKAOTALK_FAILS = ("0000",)


def _finish(run: Run, success: bool) -> None:
    if run.alerter is not None:
        run.alerter.close(timeout=ALERT_FLUSH_TIMEOUT)
    if run.metrics is not None:
        run.metrics.finish_run(success)
        if run.common.metrics_file is not None:
            try:
                run.metrics.write_textfile(run.common.metrics_file)
            except OSError as exc:
                _error(f"--metrics-file {run.common.metrics_file}: {exc.strerror or exc}")
        if run.common.pushgateway:
            try:
                run.metrics.push(run.common.pushgateway)
            except Exception as exc:
                _error(f"--pushgateway {redact_url(run.common.pushgateway)}: {exc}")
    for close in reversed(run.closers):
        with suppress(Exception):
            close()


def _build_sender(
    run: Run, *, pool_size: int | None = None, limiter: Limiter | None = None
) -> Sender:
    from .client import Sender

    assert run.config is not None
    sender = Sender.from_config(run.config, events=run.events, pool_size=pool_size, limiter=limiter)
    run.closers.append(sender.close)
    return sender


def _build_bulk_sender(run: Run, workers: int) -> Sender:
    """The sender of a bulk run: a limiter store down at start is waited for, as mid-run.

    Its rows wait (``[bulk] max-outage``, then exit 75 with them unrecorded) instead of the run
    ending before it began; nothing is ever sent unpaced.
    """
    from .client import build_limiter

    config = run.config
    assert config is not None
    limiter = build_limiter(config, emit=run.events.emit, wait_for_store=True)
    run.closers.append(limiter.close)
    return _build_sender(run, pool_size=workers, limiter=limiter)


def _channel(value: str, option: str = "--via") -> str:
    from .models import CHANNELS

    lowered = value.strip().lower()
    if lowered not in CHANNELS:
        raise typer.BadParameter(f"{value!r} is not kakaotalk or sms", param_hint=option)
    return lowered


def _print_json(document: Any) -> None:
    global _printed_json
    _printed_json = True
    _write_stdout(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


#: whether this process printed its one JSON document (``main`` adds one for usage errors)
_printed_json = False


def _write_stdout(text: str) -> None:
    """Write ``text`` to standard output, now; a reader that has left is no failure.

    ``msgsend send ... --json | head -0``: the message went, and the exit code must say so
    (a wrapper that retried an "internal error" would send it twice), so a closed pipe ends
    the output, not the command. Standard output then points at /dev/null, so that nothing
    (the interpreter's flush at exit included) fails on it again.
    """
    global _stdout_gone
    if _stdout_gone:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone = True
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


#: whether the reader of standard output has left (``_write_stdout``)
_stdout_gone = False


# ---------------------------------------------------------------------------- the commands


def _version_callback(value: bool) -> None:
    if value:
        _write_stdout(f"msgsend {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Send text messages to Korean mobile numbers: KakaoTalk first, SMS as the fallback."""


@app.command()
def send(
    recipient: Annotated[
        str, typer.Argument(metavar="RECIPIENT", help="Korean mobile number, e.g. 010-1234-5678.")
    ],
    message: Annotated[
        str,
        typer.Argument(metavar="MESSAGE", help="The text, or - to read it from standard input."),
    ],
    via: ViaOpt = "kakaotalk",
    no_fallback: NoFallbackOpt = False,
    overflow: OverflowOpt = False,
    json_output: JsonOpt = False,
    sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    log_format: LogFormatOpt = "text",
    metrics_file: MetricsFileOpt = None,
    pushgateway: PushgatewayOpt = None,
) -> None:
    """Send one message.

    Example: msgsend send 010-1234-5678 "배송이 시작되었습니다"
    """
    common = Common(config, verbose, log_file, log_format, metrics_file, pushgateway)
    with _command("send", common, json_output=json_output) as command:
        channel = _channel(via)
        text = _read_message(message)
        from .models import prepare_message

        # Checked once, before the configuration is read (bad input is 65 whatever it says).
        # As bulk does: a message too long for KakaoTalk that SMS can carry goes by SMS.
        outgoing = prepare_message(recipient, text, channel, fallback=not no_fallback)
        command.start(rows=1)
        with _run(common, command=command, sandbox=sandbox) as run:
            sender = _build_sender(run, pool_size=2)
            assert run.config is not None
            fallback = False if no_fallback else None
            if outgoing.channel != channel and not sender.falls_back(fallback):
                # Sent by SMS only as a fallback, which the configuration turns off: refused
                # with KakaoTalk's reason, as Sender.send refuses it.
                outgoing = prepare_message(recipient, text, channel, fallback=False)
            result = sender.send_prepared(
                outgoing, fallback=fallback, overflow=overflow or run.config.overflow
            )
            run.ok = result.ok
            command.counts = {result.status: 1}
            report = sender.stats.to_json()
            if json_output:
                document = result.to_json()
                if verbose:
                    document["report"] = report
                _print_json(document)
            else:
                console = run.console if verbose or _stderr_may_be_terminal() else None
                _render_send(console, result, report if verbose else None)
        raise typer.Exit(result.exit_code)


#: ``send -`` reads at most this much: no message is longer, and memory stays bounded
MAX_STDIN_BYTES = 1024 * 1024


def _read_message(message: str) -> str:
    if message != "-":
        return message
    if sys.stdin is None:
        raise InputError("MESSAGE is - but there is no standard input")
    # Bytes, decoded here strictly: the text layer's surrogateescape would let bytes that are
    # not UTF-8 through as lone surrogates.
    buffer = getattr(sys.stdin, "buffer", None)
    raw: bytes
    if buffer is not None:
        raw = buffer.read(MAX_STDIN_BYTES + 1)
    else:
        raw = sys.stdin.read(MAX_STDIN_BYTES + 1).encode("utf-8", "surrogateescape")
    if len(raw) > MAX_STDIN_BYTES:
        raise InputError(
            f"standard input is longer than {MAX_STDIN_BYTES:,} bytes: no message is that long"
        )
    try:
        data = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"standard input is not UTF-8 text: byte 0x{raw[exc.start]:02X} at offset "
            f"{exc.start} ({exc.reason})"
        ) from None
    return data.rstrip("\r\n")


def _render_send(console: Console | None, result: Any, report: dict[str, Any] | None) -> None:
    """Print how a send ended on stderr; ``console`` None: plain lines, and no rich import.

    Cron calls ``msgsend send`` once per message: plain lines there save the ~30 ms of CPU
    that importing rich costs (docs/benchmarks.md, start-up CPU).
    """
    from .logs import mask_text
    from .models import mask_recipient

    def say(style: str, word: str, rest: str) -> None:
        if console is None:
            sys.stderr.write(f"{word} {rest}\n")
            return
        from rich.markup import escape

        # The rest may quote a provider's answer: never read as rich markup.
        console.print(f"[{style}]{word}[/{style}] {escape(rest)}")

    if result.ok:
        how = f"via {result.channel}" + (" (fallback)" if result.fallback else "")
        say(
            "green",
            "sent",
            f"to {mask_recipient(result.recipient)} {how} "
            f"in {result.attempts} attempt(s), {result.latency_ms:.0f} ms",
        )
        if result.uncertain:
            say(
                "yellow",
                "note:",
                f"{result.uncertain} attempt(s) timed out after sending: "
                "the recipient may receive the message more than once",
            )
    else:
        # The error may quote the numbers a provider answered with: masked as in the log.
        say(
            "red",
            "failed",
            f"to send to {mask_recipient(result.recipient)} after "
            f"{result.attempts} attempt(s): {mask_text(str(result.error))}",
        )
    if result.note:
        say("yellow", "note:", result.note)
    if report is not None and console is not None:
        from .progress import provider_table

        console.print(provider_table(report))


@app.command()
def ping(
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="Check only this provider.", metavar="kakaotalk|sms"),
    ] = None,
    json_output: JsonOpt = False,
    sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    log_format: LogFormatOpt = "text",
    metrics_file: MetricsFileOpt = None,
    pushgateway: PushgatewayOpt = None,
) -> None:
    """Check each provider's health without sending a message (exit 0 ok, 1 degraded, 2 critical).

    Example: msgsend ping --json
    """
    common = Common(config, verbose, log_file, log_format, metrics_file, pushgateway)
    with _command("ping", common, json_output=json_output) as command:
        names = [_channel(provider, "--provider")] if provider else None
        with _run(common, command=command, sandbox=sandbox) as run:
            from .health import check_health

            try:
                sender = _build_sender(run, pool_size=2)
            except LimiterUnavailableError as exc:
                # A store down at start: ping still answers 0/1/2, its probes not sent unpaced.
                from .ratelimit.standins import UnavailableLimiter

                sender = _build_sender(run, pool_size=2, limiter=UnavailableLimiter(exc))
            report = check_health(sender, names)
            command.counts = {p.status.value: 0 for p in report.providers}
            for health in report.providers:
                command.counts[health.status.value] += 1
            if json_output:
                _print_json(report.to_json())
            else:
                _render_health(report)
            code = report.exit_code
        raise typer.Exit(code)


def _render_health(report: Any) -> None:
    if not sys.stdout.isatty():
        # Monitoring scripts and cron mail: plain columns, and no rich import to pay for.
        rows = [("provider", "status", "latency", "detail")]
        for health in report.providers:
            latency = "-" if health.latency_ms is None else f"{health.latency_ms:.0f} ms"
            rows.append((health.provider, health.status.value, latency, health.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"overall: {report.overall}"]
        lines += [
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
            for row in rows
        ]
        _write_stdout("\n".join(line.rstrip() for line in lines) + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    colours = {"up": "green", "throttled": "yellow", "auth-failed": "red", "down": "red"}
    table = Table(title=f"overall: {report.overall}", title_justify="left")
    for column in ("provider", "status", "latency", "detail"):
        table.add_column(column)
    for health in report.providers:
        colour = colours.get(health.status.value, "white")
        latency = "-" if health.latency_ms is None else f"{health.latency_ms:.0f} ms"
        # The detail may quote the provider's answer or "[section]" hints: not markup.
        table.add_row(
            health.provider,
            f"[{colour}]{health.status.value}[/{colour}]",
            latency,
            escape(health.detail),
        )
    _stdout_console().print(table)


# ---------------------------------------------------------------------------- bulk


@app.command()
def bulk(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE.csv", help="CSV file with a header row.", show_default=False),
    ],
    template: Annotated[
        str | None,
        typer.Option("--template", help="Message with {column} placeholders.", show_default=False),
    ] = None,
    via: ViaOpt = "kakaotalk",
    no_fallback: NoFallbackOpt = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            max=256,
            help="Parallel sends (default \\[bulk] concurrency).",
            show_default=False,
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results", help="Results file (default FILE.results.csv).", show_default=False
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a run: skip settled rows, retry failed ones.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and render only; send nothing.")
    ] = False,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding", help="Input encoding (default: UTF-8, else CP949).", show_default=False
        ),
    ] = None,
    allow_duplicates: Annotated[
        bool, typer.Option("--allow-duplicates", help="Send repeated recipient+message rows again.")
    ] = False,
    overflow: OverflowOpt = False,
    ignore_quiet_hours: Annotated[
        bool,
        typer.Option(
            "--ignore-quiet-hours", help="Send even inside \\[bulk] quiet-hours (e.g. not ads)."
        ),
    ] = False,
    allow_empty_fields: Annotated[
        bool,
        typer.Option("--allow-empty-fields", help="Send rows whose template uses an empty field."),
    ] = False,
    recipient_column: Annotated[
        str | None,
        typer.Option(
            "--recipient-column",
            help="Recipient column by name (default: phone, 전화번호, 휴대폰, ...).",
            show_default=False,
        ),
    ] = None,
    message_column: Annotated[
        str | None,
        typer.Option(
            "--message-column",
            help="Message column by name (default: message, content, 메시지, 내용, ...).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
    sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    log_format: LogFormatOpt = "text",
    metrics_file: MetricsFileOpt = None,
    pushgateway: PushgatewayOpt = None,
) -> None:
    """Send one message per CSV row, paced by the rate limits; results go to FILE.results.csv.

    Example: msgsend bulk recipients.csv --template "{name}님, 주문하신 상품이 발송되었습니다."
    """
    common = Common(config, verbose, log_file, log_format, metrics_file, pushgateway)
    with _command("bulk", common, json_output=json_output, input=str(file)) as command:
        channel = _channel(via)
        if encoding is not None:
            import codecs

            try:
                codecs.lookup(encoding)
            except LookupError:
                raise typer.BadParameter(
                    f"unknown encoding {encoding!r}", param_hint="--encoding"
                ) from None
        from .bulk import BulkOptions, inspect_csv, results_target
        from .models import Channel
        from .results import check_target

        info = inspect_csv(file, encoding=encoding)
        command.start(rows=info.total_rows)
        check_target(
            results_target(info.path, results, dry_run=dry_run), resume=resume, dry_run=dry_run
        )
        overrides = {"bulk.concurrency": concurrency} if concurrency else None
        with _run(
            common, command=command, overrides=overrides, sandbox=sandbox and not dry_run
        ) as run:
            assert run.config is not None
            workers = run.config.bulk.concurrency
            quiet = None if ignore_quiet_hours else _quiet_hours(run.config)
            sender = None if dry_run else _build_bulk_sender(run, workers)
            resume_command = _resume_command(
                file,
                template=template,
                via=channel,
                no_fallback=no_fallback,
                concurrency=concurrency,
                results=results,
                encoding=encoding,
                allow_duplicates=allow_duplicates,
                ignore_quiet_hours=ignore_quiet_hours,
                overflow=overflow,
                config=config,
                allow_empty_fields=allow_empty_fields,
                recipient_column=recipient_column,
                message_column=message_column,
                sandbox=sandbox,
            )
            options = BulkOptions(
                template=template,
                via=Channel(channel),
                fallback=False if no_fallback else run.config.fallback,
                concurrency=workers,
                results_path=results,
                resume=resume,
                dry_run=dry_run,
                encoding=info.encoding,
                allow_duplicates=allow_duplicates,
                allow_empty_fields=allow_empty_fields,
                recipient_column=recipient_column,
                message_column=message_column,
                max_outage=run.config.bulk.max_outage,
                quiet_hours=quiet,
                overflow=overflow or run.config.overflow,
            )
            code = _bulk(
                run, sender, info, options, json_output=json_output, resume_command=resume_command
            )
            run.ok = code == EXIT_OK
        raise typer.Exit(code)


def _quiet_hours(config: Config) -> QuietHours | None:
    """Return the configured quiet hours, or None when there are none."""
    from .outage import QuietHours

    if not config.bulk.quiet_hours:
        return None
    try:
        return QuietHours.parse(config.bulk.quiet_hours, config.bulk.timezone)
    except ValueError as exc:
        raise ConfigError(str(exc), source=_config_source(config), key="bulk.quiet-hours") from None


def _config_source(config: Config) -> str | None:
    return str(config.path) if config.path else None


def _resume_command(
    file: Path,
    *,
    template: str | None,
    via: str,
    no_fallback: bool,
    concurrency: int | None,
    results: Path | None,
    encoding: str | None,
    allow_duplicates: bool,
    ignore_quiet_hours: bool,
    overflow: bool,
    config: Path | None,
    allow_empty_fields: bool = False,
    recipient_column: str | None = None,
    message_column: str | None = None,
    sandbox: bool = False,
) -> str:
    """Return the command line that resumes this run: its own options plus ``--resume``.

    ``--sandbox`` is kept: without it the resume would send to the configured providers.
    """
    import shlex

    args = ["msgsend", "bulk", str(file), "--resume"]
    options: list[tuple[str, object]] = [
        ("--template", template),
        ("--via", via if via != "kakaotalk" else None),
        ("--concurrency", concurrency),
        ("--results", results),
        ("--encoding", encoding),
        ("--recipient-column", recipient_column),
        ("--message-column", message_column),
        ("--config", config),
    ]
    for name, value in options:
        if value is not None:
            args += [name, str(value)]
    flags = [
        ("--no-fallback", no_fallback),
        ("--allow-duplicates", allow_duplicates),
        ("--ignore-quiet-hours", ignore_quiet_hours),
        ("--allow-empty-fields", allow_empty_fields),
        ("--overflow", overflow),
        ("--sandbox", sandbox),
    ]
    args += [name for name, on in flags if on]
    return shlex.join(args)


def _bulk(
    run: Run,
    sender: Sender | None,
    info: CsvInfo,
    options: BulkOptions,
    *,
    json_output: bool,
    resume_command: str,
) -> int:
    from .bulk import send_bulk
    from .progress import BulkProgress, Schedule, render_bulk_summary
    from .ratelimit import RateLimiter

    stop = threading.Event()
    schedule = None
    if sender is not None and isinstance(sender.limiter, RateLimiter):
        schedule = Schedule.of(sender.limiter, options.via.value)
    progress = BulkProgress(
        info.total_rows,
        console=run.console if _stderr_may_be_terminal() else None,
        schedule=schedule,
    )
    restore = _install_interrupt_handlers(stop, run)
    run.events.subscribe(progress.on_event)
    try:
        with progress:
            report = send_bulk(
                info.path,
                sender,
                options,
                stop=stop,
                on_progress=progress.update,
                emit=run.events.emit,
                info=info,
            )
    finally:
        run.events.unsubscribe(progress.on_event)
        restore()
    stats = sender.stats.to_json() if sender is not None else None
    if run.command is not None:
        run.command.counts = {status: n for status, n in report.counts.items() if n}
    unfinished = bool(report.left) and (report.stopped is not None or report.interrupted)
    if json_output:
        document = report.to_json()
        if stats is not None:
            document["report"] = stats
        document["resume_command"] = resume_command if unfinished else None
        _print_json(document)
    else:
        render_bulk_summary(run.console, report, stats)
    if report.stopped is not None:
        _error(report.stopped)
    if unfinished:
        sys.stderr.write(
            f"msgsend: {report.left} row(s) not sent yet, nothing recorded for them; "
            f"to send them: {resume_command}\n"
        )
        sys.stderr.flush()
    return int(report.exit_code)


def _install_interrupt_handlers(stop: threading.Event, run: Run) -> Any:
    """First Ctrl-C (or SIGTERM): drain and stop. Second Ctrl-C: quit at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            sys.stderr.write("\nmsgsend: second interrupt, quitting now\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        sys.stderr.write(
            "\nmsgsend: interrupted: finishing the messages in flight "
            "(press Ctrl-C again to quit at once)\n"
        )
        sys.stderr.flush()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


# ---------------------------------------------------------------------------- sandbox


@app.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    kakaotalk_port: Annotated[int, typer.Option("--kakaotalk-port", min=0, max=65535)] = 8081,
    sms_port: Annotated[int, typer.Option("--sms-port", min=0, max=65535)] = 8082,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0, help="Delay every answer.")
    ] = 0.0,
    failure_rate: Annotated[
        float,
        typer.Option("--failure-rate", min=0.0, max=1.0, help="Share of requests answered 503."),
    ] = 0.0,
    kakaotalk_down: Annotated[
        bool, typer.Option("--kakaotalk-down", help="KakaoTalk answers 503.")
    ] = False,
    sms_down: Annotated[bool, typer.Option("--sms-down", help="SMS answers 503.")] = False,
    kakaotalk_status: Annotated[
        int | None,
        typer.Option(
            "--kakaotalk-status",
            help="KakaoTalk answers this status (e.g. 401).",
            show_default=False,
        ),
    ] = None,
    sms_status: Annotated[
        int | None,
        typer.Option("--sms-status", help="SMS answers this status.", show_default=False),
    ] = None,
    kakaotalk_limit: Annotated[
        int, typer.Option("--kakaotalk-limit", min=0, help="Requests per period (0: none).")
    ] = 100,
    sms_limit: Annotated[
        int, typer.Option("--sms-limit", min=0, help="Requests per period (0: none).")
    ] = 500,
    period: Annotated[
        float, typer.Option("--period", min=0.001, help="Rate-limit window in seconds.")
    ] = 60.0,
    kakaotalk_fail_suffix: Annotated[
        list[str] | None,
        typer.Option(
            "--kakaotalk-fail-suffix",
            help="KakaoTalk answers 503 for numbers ending so (repeatable).",
            show_default=False,
            metavar="DIGITS",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the failure injection.", show_default=False),
    ] = None,
    wire_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Request format served: default (SPEC §2 JSON) or assignment "
            '(KakaoTalk JSON {"phone","message"}; SMS ?phone=... with a form body message=...).',
            metavar="default|assignment",
        ),
    ] = "default",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not print each request.")
    ] = False,
) -> None:
    """Run fake KakaoTalk and SMS providers on 127.0.0.1 until Ctrl-C.

    Example: msgsend sandbox --latency-ms 20 --failure-rate 0.1
    """
    with _errors_to_exit_codes():
        from .formats import FORMAT_NAMES, preset
        from .models import CHANNELS
        from .sandbox import ProviderOptions, Sandbox, SandboxOptions, format_request

        if wire_format not in FORMAT_NAMES:
            raise typer.BadParameter(
                f"{wire_format!r} is not one of {', '.join(FORMAT_NAMES)}", param_hint="--format"
            )
        formats = {name: preset(wire_format, name) for name in CHANNELS}

        def provider_options(
            name: str, down: bool, status: int | None, limit: int
        ) -> ProviderOptions:
            return ProviderOptions(
                request_format=formats[name],
                latency_ms=latency_ms,
                failure_rate=failure_rate,
                down=down,
                status=status,
                rate_limit=limit or None,
                rate_period=period,
            )

        try:
            options = SandboxOptions(
                kakaotalk=provider_options(
                    "kakaotalk", kakaotalk_down, kakaotalk_status, kakaotalk_limit
                ),
                sms=provider_options("sms", sms_down, sms_status, sms_limit),
                kakaotalk_fail_suffixes=tuple(kakaotalk_fail_suffix or ()),
                seed=seed,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

        def show(request: Any) -> None:
            _write_stdout(format_request(request) + "\n")

        sandbox = Sandbox(
            options,
            host=host,
            kakaotalk_port=kakaotalk_port,
            sms_port=sms_port,
            on_request=None if quiet else show,
        )
        try:
            sandbox.start()
        except OSError as exc:
            _error(f"cannot start the sandbox: {exc}")
            raise typer.Exit(EXIT_FAILED) from None
        # Before the banner: whoever reads it may stop the sandbox at once (SIGTERM, Ctrl-C),
        # and that must stop it cleanly too.
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            sys.stderr.write(
                f"sandbox ({wire_format} format): "
                f"KakaoTalk at {_endpoint(sandbox.kakaotalk_url, formats['kakaotalk'])}, "
                f"SMS at {_endpoint(sandbox.sms_url, formats['sms'])} (Ctrl-C to stop)\n"
            )
            sys.stderr.flush()
            while not stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.close()
            sys.stderr.write(f"sandbox: stopped after {sandbox.count()} request(s)\n")


def _endpoint(base_url: str, fmt: Any) -> str:
    """Return ``POST http://...:8082/sms?phone=... (form)``: where a format sends a message."""
    query = "&".join(f"{name}=..." for name in fmt.query)
    return f"{fmt.method} {base_url}{fmt.path}{'?' + query if query else ''} ({fmt.body})"


# ---------------------------------------------------------------------------- config


@config_app.command("init")
def config_init(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Where to write (default $XDG_CONFIG_HOME/msgsend/config.toml).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    wire_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Request format: default (SPEC §2 JSON) or assignment "
            '(KakaoTalk JSON {"phone","message"}; SMS ?phone=... with a form body message=...).',
            metavar="default|assignment",
        ),
    ] = "default",
) -> None:
    """Write a commented sample configuration (mode 600).

    Example: msgsend config init --format assignment ./msgsend.toml
    """
    with _errors_to_exit_codes():
        from .config import render_sample_config
        from .formats import FORMAT_NAMES

        if wire_format not in FORMAT_NAMES:
            raise typer.BadParameter(
                f"{wire_format!r} is not one of {', '.join(FORMAT_NAMES)}", param_hint="--format"
            )

        if path is None:
            xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            path = Path(xdg) / "msgsend" / "config.toml"
        if path.exists() and not force:
            _error(f"{path} exists; pass --force to overwrite it")
            raise typer.Exit(EXIT_USAGE)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                # A file overwritten with --force keeps its mode through O_TRUNC: 600 it is.
                # Not a device or a pipe (/dev/stdout, --force /dev/null as root): written
                # to, its mode left alone.
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.chmod(path, 0o600)
                handle.write(render_sample_config(wire_format))
        except OSError as exc:
            raise ConfigError(f"cannot write: {exc.strerror or exc}", source=str(path)) from None
        sys.stderr.write(f"wrote {path}\n")


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print the effective configuration, secrets redacted, and where each value came from."""
    with _errors_to_exit_codes(json_output):
        from .config import effective_items, load_config, render_effective_config

        loaded = load_config(config)
        for warning in loaded.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        if json_output:
            _print_json(
                {
                    "file": str(loaded.path) if loaded.path else None,
                    "values": {k: {"value": v, "source": s} for k, v, s in effective_items(loaded)},
                }
            )
            return
        _write_stdout(render_effective_config(loaded))


@config_app.command("check")
def config_check(config: ConfigOpt = None) -> None:
    """Validate the configuration and open the rate limiter's store (exit 0 or 78)."""
    with _errors_to_exit_codes():
        from .client import build_limiter
        from .config import load_config

        loaded = load_config(config)
        limiter = build_limiter(loaded)
        limiter.close()
        for warning in loaded.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        _write_stdout(f"configuration OK ({loaded.path or 'built-in defaults'})\n")


def _app_for(args: list[str]) -> typer.Typer:
    """Return an app holding only the command that ``args`` names, when it names one.

    typer builds (and evaluates the annotations of) every command of a group before it runs
    one: about 40 ms of ``msgsend ping``'s start-up. The one-command app behaves the same for
    that command; anything else (``--help``, an unknown command, ``config``) gets the full app.
    """
    name = args[0] if args else None
    chosen = [
        info
        for info in app.registered_commands
        if name is not None and (info.name or getattr(info.callback, "__name__", None)) == name
    ]
    if len(chosen) != 1:
        return app
    single = typer.Typer(**_APP_SETTINGS)
    single.registered_callback = app.registered_callback
    single.registered_commands = chosen
    return single


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line (the ``msgsend`` console script)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        _app_for(args)(args=args, prog_name="msgsend")
    except KeyboardInterrupt:
        sys.stderr.write("\nmsgsend: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except SystemExit as exc:
        # typer refused the command line before any msgsend code ran (an unknown option, a
        # value of the wrong type): --json still gets its one document.
        if exc.code == EXIT_USAGE and "--json" in args and not _printed_json:
            _print_json_error("usage error: the command line is invalid (details on stderr)", 2)
        raise
    raise SystemExit(0)
