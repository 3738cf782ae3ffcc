"""How many tokens each Retry key has sealed, against the draft's limit.

draft-ietf-quic-retry-offload §5 follows RFC 9001's confidentiality limit for
AES-128-GCM: at most 2^23 tokens per key. Every Retry the workers send seals one token
with the newest key (``retry_sent``), so the supervisor adds each second's new Retries
to that key's count, kept by fingerprint in the runtime state file so a reload or a
restart carries it on (a reboot does not: /run is a tmpfs). From NEAR of the limit on,
``/health`` says so and is degraded: add a key with a higher sequence, reload, and
retire the old one once its tokens have expired. Tokens the backends seal (NEW_TOKEN,
Retries of their own) are not seen here: keep the margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pesigitg.daemon.state import RuntimeState, key_fingerprint
from pesigitg.routing.retry import RetrySpec

__all__ = ["LIMIT", "NEAR", "KeyUse", "SealedTokens"]

log = logging.getLogger("pesigitg.keys")

LIMIT = 1 << 23             # tokens per key (RFC 9001 6.6, the draft's §5)
NEAR = 0.75                 # the share of LIMIT from which /health warns
SAVE_EVERY = 10.0           # seconds between state-file writes while counts move


@dataclass(frozen=True)
class KeyUse:
    sequence: int
    sealed: int

    @property
    def share(self) -> float:
        return self.sealed / LIMIT

    def describe(self) -> dict[str, object]:
        return {"sequence": self.sequence, "tokens_sealed": self.sealed, "limit": LIMIT,
                "share_of_limit": round(self.share, 6)}

    def warning(self) -> str | None:
        if self.share < NEAR:
            return None
        return (f"Retry key sequence {self.sequence} has sealed {self.sealed} tokens, "
                f"{self.share:.0%} of the {LIMIT} a key may seal: add a key with a higher "
                "sequence, reload, and retire this one")


class SealedTokens:
    """The counts per key, fed with the workers' running total of Retries sent."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state
        self._last_total: int | None = None
        self._saved_at = 0.0
        self._warned: set[str] = set()

    def update(self, retry: RetrySpec, total_sent: int, now: float) -> bool:
        """Add the Retries sent since the last call to the newest key's count (the
        first call only sets where counting starts); True when the counts are due to be
        saved (:meth:`prune`, then the state file)."""
        last, self._last_total = self._last_total, total_sent
        if last is None or total_sent <= last or not retry.keys:
            return False
        newest = max(retry.keys, key=lambda k: k.sequence)
        fingerprint = key_fingerprint(newest.key)
        counts = self.state.tokens_sealed
        counts[fingerprint] = counts.get(fingerprint, 0) + total_sent - last
        use = KeyUse(newest.sequence, counts[fingerprint])
        if use.warning() and fingerprint not in self._warned:
            self._warned.add(fingerprint)
            log.warning("%s", use.warning())
        return now - self._saved_at >= SAVE_EVERY

    def prune(self, retry: RetrySpec, now: float) -> None:
        """Before the state is saved: the counts of keys no longer configured are
        forgotten, and the next save is due SAVE_EVERY from ``now``."""
        configured = {key_fingerprint(k.key) for k in retry.keys}
        self.state.tokens_sealed = {f: n for f, n in self.state.tokens_sealed.items()
                                    if f in configured}
        self._saved_at = now

    def uses(self, retry: RetrySpec) -> list[KeyUse]:
        counts = self.state.tokens_sealed
        return [KeyUse(k.sequence, counts.get(key_fingerprint(k.key), 0))
                for k in sorted(retry.keys, key=lambda k: k.sequence)]
