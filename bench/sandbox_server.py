"""Run msgsend's fake providers in this process, for a benchmark driving them from another.

The benchmark starts this script as a separate process (so the server does not share the
client's GIL), reads one JSON line with the two ports, and then talks over stdin::

    stats   -> one JSON line: requests per provider and status, and the first/last arrival
               (monotonic seconds) of each provider's requests
    reset   -> forget the recorded requests and empty the rate-limit windows; answers "ok"
    EOF     -> stop

Options (JSON in argv[1]): latency_ms, kakaotalk_limit, sms_limit (None: no limit), period,
kakaotalk_down, sms_down. Binds 127.0.0.1 on free ports only.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions


def _stats(sandbox: Sandbox) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for provider in ("kakaotalk", "sms"):
        records = sandbox.received(provider)
        statuses = Counter(str(r.status) for r in records)
        arrivals = [r.monotonic for r in records]
        out[provider] = {
            "total": len(records),
            "status": dict(statuses),
            "first": min(arrivals) if arrivals else None,
            "last": max(arrivals) if arrivals else None,
        }
    return out


def main() -> None:
    opts: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    latency = float(opts.get("latency_ms", 20.0))
    period = float(opts.get("period", 60.0))

    def provider(limit: int | None, down: bool, password: str) -> ProviderOptions:
        return ProviderOptions(
            latency_ms=latency, rate_limit=limit, rate_period=period, down=down, password=password
        )

    options = SandboxOptions(
        kakaotalk=provider(opts.get("kakaotalk_limit"), bool(opts.get("kakaotalk_down")), "1234"),
        sms=provider(opts.get("sms_limit"), bool(opts.get("sms_down")), "5678"),
    )
    # Room for every request a benchmark makes: counts must not be truncated.
    with Sandbox(options, max_records=1_000_000) as sandbox:
        print(json.dumps(sandbox.ports), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(_stats(sandbox)), flush=True)
            elif command == "reset":
                sandbox.reset()
                print("ok", flush=True)
            elif command == "quit":
                break


if __name__ == "__main__":
    main()
