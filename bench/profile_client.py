"""6. Where the client's CPU goes per message: cProfile of a bulk run, every thread.

Runs ``send_bulk`` in this process (workers, producer and results writer all profiled with a
per-thread CPU clock) against the sandbox in a child process, and prints the functions with
the most CPU time of their own, then the same time grouped by area (HTTP stack, limiter,
logging, results file, ...). Also writes a pyinstrument tree of the main thread when
pyinstrument is installed.

    python bench/profile_client.py [--rows 2000] [--concurrency 16] [--store sqlite]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import SandboxProcess, Workspace, make_simple_csv, write_config

#: area of a function, from the first matching fragment of its file name
AREAS = (
    ("requests/", "requests (Session.post, adapters, auth, hooks)"),
    ("urllib3/", "urllib3 (pool, HTTP response)"),
    ("http/client.py", "http.client (headers, parsing)"),
    ("email/", "http.client (headers, parsing)"),
    ("socket.py", "socket I/O"),
    ("ssl.py", "socket I/O"),
    ("selectors.py", "socket I/O"),
    ("msgsend/ratelimit/", "msgsend rate limiter"),
    ("pyrate_limiter/", "msgsend rate limiter"),
    ("sqlite3", "msgsend rate limiter"),
    ("fcntl", "msgsend rate limiter"),
    ("msgsend/bulk.py", "msgsend bulk (queue, results file, counts)"),
    ("msgsend/csvinput.py", "msgsend CSV reading and validation"),
    ("msgsend/models.py", "msgsend validation (number, message)"),
    ("unicodedata", "msgsend validation (number, message)"),
    ("encodings/", "msgsend validation (number, message)"),
    ("csv", "msgsend bulk (queue, results file, counts)"),
    ("msgsend/client.py", "msgsend Sender (retry, breaker, stats)"),
    ("msgsend/retry.py", "msgsend Sender (retry, breaker, stats)"),
    ("msgsend/circuit.py", "msgsend Sender (retry, breaker, stats)"),
    ("msgsend/report.py", "msgsend Sender (retry, breaker, stats)"),
    ("msgsend/providers/", "msgsend provider (body, JSON, error mapping)"),
    ("json/", "msgsend provider (body, JSON, error mapping)"),
    ("logging/", "logging"),
    ("msgsend/logs.py", "logging"),
    ("threading.py", "threads, locks, queue"),
    ("queue.py", "threads, locks, queue"),
    ("lock", "threads, locks, queue"),
    ("Lock", "threads, locks, queue"),
)


#: builtins where a thread waits (for the server, a lock, a sleep) rather than computes
WAITS = (
    "recv_into",
    "acquire' of '_thread",
    "time.sleep",
    "'poll' of",
    "select.select",
    "'wait' of",
    "_thread.lock' objects>",
)


#: entry points whose cumulative time splits a message's cost: (label, file fragment, function)
ENTRY_POINTS = (
    ("Sender.send (everything for one message)", "msgsend/client.py", "send"),
    ("  HTTP exchange (requests Session.send)", "requests/sessions.py", "send"),
    ("  rate limiter acquire", "msgsend/ratelimit/limiter.py", "acquire"),
    ("  retry loop around the attempt (backoff)", "msgsend/retry.py", "call_with_retry"),
    ("  request body (json.dumps)", "json/__init__.py", "dumps"),
    ("results line and counts (bulk record)", "msgsend/bulk.py", "record"),
    ("CSV row read and validated", "msgsend/csvinput.py", "_validate"),
)


def area(filename: str, function: str) -> str:
    text = f"{filename}:{function}"
    if filename == "~" and any(fragment in function for fragment in WAITS):
        return "waiting (I/O, locks, sleeps: not CPU)"
    for fragment, name in AREAS:
        if fragment in text:
            return name
    return "other"


class _ThreadProfiles:
    """Profile every thread started while installed, with a per-thread CPU clock."""

    def __init__(self, timer: Any) -> None:
        self.timer = timer
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._original = threading.Thread.run

    def __enter__(self) -> _ThreadProfiles:
        profiles = self

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(profiles.timer)
            with profiles._lock:
                profiles.profiles.append(profile)
            profile.enable()
            try:
                profiles._original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        threading.Thread.run = self._original  # type: ignore[method-assign]


def profile(
    rows: int, concurrency: int, store: str, latency_ms: float, cpu_timer: bool = False
) -> dict[str, Any]:
    """Profile ``send_bulk`` of ``rows`` rows; the default timer is the (cheap) wall clock.

    ``cpu_timer`` uses each thread's CPU clock instead: exact, but a system call per event
    makes the run many times slower.
    """
    timer = time.thread_time if cpu_timer else time.perf_counter
    from msgsend.bulk import BulkOptions, send_bulk
    from msgsend.client import Sender
    from msgsend.config import load_config

    with Workspace() as ws, SandboxProcess(ws.env, latency_ms=latency_ms) as sandbox:
        data = make_simple_csv(ws.path("rows.csv"), rows)
        config_path = write_config(
            ws.path("config.toml"),
            sandbox,
            store=store,
            sqlite_path=ws.path("limiter.sqlite"),
            concurrency=concurrency,
        )
        config = load_config(config_path)
        sender = Sender.from_config(config, pool_size=concurrency)
        try:
            # Warm-up: connections, first-call caches; not profiled.
            send_bulk(
                make_simple_csv(ws.path("warm.csv"), 50),
                sender,
                BulkOptions(concurrency=concurrency, results_path=ws.path("warm.results.csv")),
            )
            main_profile = cProfile.Profile(timer)
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            with _ThreadProfiles(timer) as threads:
                main_profile.enable()
                report = send_bulk(
                    data,
                    sender,
                    BulkOptions(concurrency=concurrency, results_path=ws.path("rows.results.csv")),
                )
                main_profile.disable()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
        finally:
            sender.close()
        assert report.sent == rows, report
    stats = pstats.Stats(main_profile)
    for thread_profile in threads.profiles:
        stats.add(thread_profile)
    return {"stats": stats, "cpu": cpu, "wall": wall, "rows": rows}


def summarize(result: dict[str, Any], top: int = 25) -> str:
    stats: pstats.Stats = result["stats"]
    rows = result["rows"]
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_area: dict[str, float] = defaultdict(float)
    for (filename, _line, function), entry in raw.items():
        by_area[area(filename, function)] += entry[2]
    waiting = by_area.pop("waiting (I/O, locks, sleeps: not CPU)", 0.0)
    total = sum(by_area.values())
    raw = {key: entry for key, entry in raw.items() if not area(key[0], key[2]).startswith("wait")}
    out = io.StringIO()
    out.write(
        f"{rows} messages: process CPU {result['cpu']:.3f} s "
        f"({result['cpu'] / rows * 1e6:.0f} µs/message), wall {result['wall']:.3f} s; "
        f"profiled {total:.3f} s computing, {waiting:.3f} s waiting "
        "(cProfile's own overhead included)\n\n"
    )
    out.write("CPU by area (own time of the functions in it):\n")
    for name, seconds in sorted(by_area.items(), key=lambda item: -item[1]):
        out.write(f"  {seconds / total * 100:5.1f}%  {seconds / rows * 1e6:7.1f} µs/msg  {name}\n")
    out.write(
        "\nCumulative time of the main steps (wall clock under the profiler: inflated, and "
        "the HTTP exchange includes the wait for the server):\n"
    )
    for label, fragment, function in ENTRY_POINTS:
        cumulative = sum(
            entry[3]
            for (filename, _line, name), entry in stats.stats.items()  # type: ignore[attr-defined]
            if fragment in filename and name == function
        )
        out.write(f"  {cumulative / rows * 1e6:7.1f} µs/msg  {label}\n")
    out.write(f"\nTop {top} functions by own CPU time:\n")
    ranked = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    for (filename, line, function), entry in ranked:
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else "~"
        out.write(
            f"  {entry[2] / total * 100:5.1f}%  {entry[1]:>8} calls  "
            f"{entry[3] / rows * 1e6:7.1f} µs/msg cum  {short}:{line}({function})\n"
        )
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "memory"))
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--cpu-timer",
        action="store_true",
        help="per-thread CPU clock (exact, much slower) instead of the wall clock",
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", type=Path, help="write the merged pstats here")
    args = parser.parse_args()
    result = profile(args.rows, args.concurrency, args.store, args.latency_ms, args.cpu_timer)
    if args.dump:
        result["stats"].dump_stats(args.dump)
    sys.stdout.write(summarize(result, args.top))


if __name__ == "__main__":
    main()
