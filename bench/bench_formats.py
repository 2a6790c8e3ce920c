"""9. The cost of request formats as data: preparing one message's request, CPU per message.

Before request formats, a provider prepared a message by ``json.dumps`` of a literal dict, a copy
of its prepared request and ``prepare_body``. Now a ``RequestBuilder`` (compiled once per run)
renders the format's templates and encodes them, and the provider copies its prepared request
and sets the query, headers and body. This measures both, in this process, on the same
messages (Korean text, as most are): the hand-written path of before as the baseline, the
builder with the default format (SPEC §2's JSON), the assignment's SMS format (query + form
body) and a format with an idempotency header and ``{kind}`` (placeholders computed per
message). Repetitions are interleaved; the table shows the least CPU microseconds per message
of the repetitions (as timeit advises: on a shared machine the others measure the others).
Budget: a format adds at most 14 µs of CPU per message over the hand-written path, 1% of the
client's whole CPU per message (about 1,400 µs with the send and the answer: see 6), so that
the throughput of 1 cannot move; the ratio (hand-written / builder) is reported too.

    python bench/bench_formats.py [--reps 7]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from common import Row, Section, Workspace, run_standalone, spread

from msgsend.formats import RequestFormat, bulk_message_id, preset
from msgsend.providers import KakaoTalkProvider, SmsProvider

MESSAGES = 2000
#: microseconds of CPU a format may add per message (1% of a message's client CPU, see 6)
BUDGET_US = 14.0
TEXT = "안녕하세요 {n}번 고객님, 주문하신 상품이 오늘 출발합니다. 문의: 1588-0000"


def _messages() -> list[tuple[str, str, str]]:
    return [
        (
            f"010-{1000 + i // 10000:04d}-{i % 10000:04d}",
            TEXT.format(n=i),
            bulk_message_id("/tmp/x.results.csv", i, "r", "t"),
        )
        for i in range(MESSAGES)
    ]


def _hand_written(provider: KakaoTalkProvider) -> Callable[[str, str, str], object]:
    """The per-message work of the provider before formats (see git history of base.py)."""
    template = provider._template
    session = provider.session
    assert template is not None

    def prepare(recipient: str, text: str, _message_id: str) -> object:
        data = json.dumps({"recipient": recipient, "message": text}, ensure_ascii=False)
        if not session.cookies:  # (as then: a cookie would need Session.post's merging)
            request = template.copy()
            request.prepare_body(data.encode("utf-8"), None)
        return request

    return prepare


def _with_builder(provider: KakaoTalkProvider | SmsProvider) -> Callable[[str, str, str], object]:
    def prepare(recipient: str, text: str, message_id: str) -> object:
        return provider._prepare(provider.builder.build(recipient, text, message_id))

    return prepare


def _cpu_per_message(prepare: Callable[[str, str, str], object], messages: list) -> float:
    started = time.process_time()
    for recipient, text, message_id in messages:
        prepare(recipient, text, message_id)
    return (time.process_time() - started) / len(messages) * 1e6


def bench(ws: Workspace, reps: int = 7) -> Section:
    section = Section("formats", "9. Request formats as data: preparing one message's request")
    messages = _messages()
    keyed = RequestFormat(
        path="/kakaotalk-messages",
        fields={"phone": "{recipient_e164}", "message": "{message}", "type": "{kind}"},
        headers={"Idempotency-Key": "{message_id}"},
    )
    providers = {
        "default": KakaoTalkProvider("http://127.0.0.1:9", "autoever", "1234"),
        "assignment-sms": SmsProvider(
            "http://127.0.0.1:9", "autoever", "5678", request_format=preset("assignment", "sms")
        ),
        "keyed": KakaoTalkProvider("http://127.0.0.1:9", "u", "p", request_format=keyed),
    }
    cases = {"hand-written": _hand_written(providers["default"])}
    cases |= {name: _with_builder(provider) for name, provider in providers.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for prepare in cases.values():  # warm-up
        _cpu_per_message(prepare, messages[:200])
    names = list(cases)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            samples[name].append(_cpu_per_message(cases[name], messages))
    for provider in providers.values():
        provider.close()
    base = min(samples["hand-written"])
    for name, label in (
        ("default", "default format (SPEC §2 JSON) through the builder"),
        ("assignment-sms", "assignment SMS format (query + form body)"),
        ("keyed", "JSON + Idempotency-Key header + {kind} + {recipient_e164}"),
    ):
        best = min(samples[name])
        section.rows.append(
            Row(
                name=f"prepare one message: {label}",
                baseline=f"{base:.1f} µs",
                msgsend=f"{best:.1f} µs (+{best - base:.1f})",
                ratio=base / best,
                budget=f"+ ≤ {BUDGET_US:g} µs",
                met=best - base <= BUDGET_US,
            )
        )
    section.details += [
        f"- CPU µs per message, {name}: {spread(values)}" for name, values in samples.items()
    ]
    section.raw = samples
    return section


if __name__ == "__main__":
    run_standalone(bench, __doc__, 7)
