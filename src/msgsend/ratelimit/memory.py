"""The ``memory`` store: one process's threads share each provider's budget."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable

from .core import Limit, Policy, ProviderStore, clock_went_back, monotonic_ms, steady_wall_clock

__all__ = ["MemoryStore"]


class MemoryStore:
    """Slots in this process's memory; nothing is shared with other processes."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self, strategy: str, guard: float | None, now_ms: Callable[[], int] | None
    ) -> None:
        self.strategy = strategy
        self.guard = guard
        # Fixed windows are aligned to the epoch; the others only need a clock that never
        # goes back.
        self.now_ms = now_ms or (
            steady_wall_clock() if strategy == "fixed-window" else monotonic_ms
        )

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        return _MemorySlots(name, Policy(self.strategy, limit, self.guard), self.now_ms)

    def close(self) -> None:
        """Nothing to release."""


class _MemorySlots:
    """One provider: settled entries in expiry order, held ones by token, GCRA's TAT."""

    def __init__(self, name: str, policy: Policy, now_ms: Callable[[], int]) -> None:
        self.name = name
        self.policy = policy
        self.now_ms = now_ms
        self.lock = threading.Lock()
        self.settled: deque[int] = deque()  # expiries, ascending: settles come in time order
        self.held: dict[int, int] = {}  # token -> expiry (windows) or deadline (token bucket)
        self.tat_us = 0
        self.ids = itertools.count(1)

    def take(self, hold_ms: int) -> tuple[int | None, int]:
        policy = self.policy
        with self.lock:
            now = self.now_ms()
            self._forget_the_future(now, hold_ms)
            if policy.strategy == "token-bucket":
                self._expire_held_tokens(now)
                wait = policy.token_wait(now, self.tat_us, len(self.held))
                hold_until = now + hold_ms
            else:
                settled = self.settled
                while settled and settled[0] <= now:
                    settled.popleft()
                for token in [t for t, end in self.held.items() if end <= now]:
                    del self.held[token]
                occupied = len(settled) + len(self.held)
                wait = 0
                if occupied >= policy.count:
                    need = occupied - policy.count + 1
                    first = list(itertools.islice(settled, need))
                    wait = policy.window_wait(now, occupied, first, list(self.held.values()))
                hold_until = policy.expiry(now + hold_ms)
            if wait:
                return None, wait
            token = next(self.ids)
            self.held[token] = hold_until
            return token, 0

    def settle(self, token: int) -> None:
        policy = self.policy
        with self.lock:
            now = self.now_ms()
            self.held.pop(token, None)
            if policy.strategy == "token-bucket":
                # One that expired was counted at its deadline; counting it again is the safe
                # side (its request may have arrived after that deadline).
                self.tat_us = policy.token_settle(self.tat_us, now)
                return
            end = policy.expiry(now)
            if self.settled and end < self.settled[-1]:  # an injected clock went back
                self.settled = deque(sorted([*self.settled, end]))
            else:
                self.settled.append(end)

    def cancel(self, token: int) -> None:
        with self.lock:
            self.held.pop(token, None)

    def _expire_held_tokens(self, now: int) -> None:
        """Count each held slot whose deadline passed (its process died) at that deadline."""
        for token, deadline in sorted(self.held.items(), key=lambda item: item[1]):
            if deadline > now:
                break
            self.tat_us = self.policy.token_settle(self.tat_us, deadline)
            del self.held[token]

    def _forget_the_future(self, now: int, hold_ms: int) -> None:
        bound = self.policy.future_bound(now, hold_ms)
        newest = max(
            self.tat_us // 1000, *self.held.values(), self.settled[-1] if self.settled else 0
        )
        if newest > bound:
            clock_went_back(self.name)
            self.settled.clear()
            self.held.clear()
            self.tat_us = 0
