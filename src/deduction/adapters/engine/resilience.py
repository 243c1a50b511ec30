"""Circuit breaker and retry policy for calls to the Engine."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deduction.domain.times import utc_now_iso


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown` s lets one probe through.

    closed -> (threshold failures) -> open -> (cooldown) -> half-open: one call is let
    through; its success closes the circuit, its failure opens it for another cooldown.
    """

    threshold: int = 5
    cooldown: float = 5.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    failing_since: str | None = None
    _opened_at: float | None = None
    _probe_out: bool = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "open" if self.clock() - self._opened_at < self.cooldown else "half-open"

    def is_open(self) -> bool:
        """True while a call would be refused (open, or half-open with its probe out)."""
        state = self.state
        return state == "open" or (state == "half-open" and self._probe_out)

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the first caller gets the probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def abandon(self) -> None:
        """A call that was let through ended without an outcome (cancelled)."""
        self._probe_out = False

    def record_success(self) -> None:
        self.failures, self.failing_since = 0, None
        self._opened_at, self._probe_out = None, False

    def record_failure(self) -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = utc_now_iso()
        if self._probe_out or self.failures >= self.threshold:
            self._opened_at, self._probe_out = self.clock(), False


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff, capped in attempts and in total time per operation."""

    attempts: int = 3
    base: float = 0.2
    cap: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] after attempt `attempt`."""
        return self.rng.uniform(0, min(self.cap, self.base * 2**attempt))
