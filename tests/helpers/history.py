"""A small Jepsen-style history checker for queue tests.

Producers record every sequence number whose ``put`` *returned* (``ack``), and the
one that may have been in flight when they died (``maybe``).  Consumers record
every delivery, in the order each consumer received them (``deliver``).
``check()`` classifies:

- lost:        acked, never delivered
- duplicated:  delivered more than once (across all consumers)
- unexpected:  delivered, but neither acked nor declared ``maybe``
- recovered:   delivered, not acked, declared ``maybe`` (allowed)
- reordered:   for one consumer and one producer, a sequence number lower than
               the previous one that consumer saw from that producer (FIFO per
               producer per consumer violated)

Producers and consumers are any hashable ids; sequence numbers are ints.
"""
from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Hashable, Iterable

Key = tuple  # (producer, seq)


@dataclasses.dataclass
class CheckResult:
    lost: list = dataclasses.field(default_factory=list)
    duplicated: list = dataclasses.field(default_factory=list)  # (producer, seq, times)
    unexpected: list = dataclasses.field(default_factory=list)
    recovered: list = dataclasses.field(default_factory=list)
    reordered: list = dataclasses.field(default_factory=list)  # (consumer, producer, prev, seq)
    acked: int = 0
    delivered: int = 0

    @property
    def counts(self) -> dict:
        return {
            "acked": self.acked,
            "delivered": self.delivered,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
            "recovered": len(self.recovered),
            "reordered": len(self.reordered),
        }

    def ok(self, max_lost: int = 0) -> bool:
        return (
            len(self.lost) <= max_lost
            and not self.duplicated
            and not self.unexpected
            and not self.reordered
        )

    def summary(self, limit: int = 10) -> str:
        parts = [", ".join(f"{k}={v}" for k, v in self.counts.items())]
        for name in ("lost", "duplicated", "unexpected", "reordered"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name} (first {min(limit, len(items))}): {items[:limit]}")
        return "\n".join(parts)


class History:
    """Accumulates acks and deliveries; not thread-safe (wrap calls in a lock)."""

    def __init__(self) -> None:
        self._acked: dict[Hashable, set] = defaultdict(set)
        self._maybe: dict[Hashable, set] = defaultdict(set)
        # consumer -> list of (producer, seq) in receipt order
        self._deliveries: dict[Hashable, list] = defaultdict(list)
        self._delivered_count: Counter = Counter()

    # -- recording ---------------------------------------------------------
    def ack(self, producer: Hashable, seq: int) -> None:
        self._acked[producer].add(seq)

    def ack_many(self, producer: Hashable, seqs: Iterable[int]) -> None:
        self._acked[producer].update(seqs)

    def maybe(self, producer: Hashable, seq: int) -> None:
        """``seq`` may or may not have been put (its producer died inside put)."""
        self._maybe[producer].add(seq)

    def deliver(self, consumer: Hashable, producer: Hashable, seq: int) -> None:
        self._deliveries[consumer].append((producer, seq))
        self._delivered_count[(producer, seq)] += 1

    def deliver_many(self, consumer: Hashable, items: Iterable[tuple]) -> None:
        lst = self._deliveries[consumer]
        cnt = self._delivered_count
        for producer, seq in items:
            lst.append((producer, seq))
            cnt[(producer, seq)] += 1

    # -- queries -------------------------------------------------------------
    def max_acked(self, producer: Hashable) -> int:
        s = self._acked.get(producer)
        return max(s) if s else -1

    def acked_count(self) -> int:
        return sum(len(s) for s in self._acked.values())

    def delivered_count(self) -> int:
        return sum(self._delivered_count.values())

    def is_delivered(self, producer: Hashable, seq: int) -> bool:
        return self._delivered_count.get((producer, seq), 0) > 0

    def undelivered_acked(self) -> int:
        n = 0
        for p, seqs in self._acked.items():
            for s in seqs:
                if (p, s) not in self._delivered_count:
                    n += 1
        return n

    # -- the check -----------------------------------------------------------
    def check(self) -> CheckResult:
        r = CheckResult()
        r.acked = self.acked_count()
        r.delivered = self.delivered_count()
        for producer, seqs in self._acked.items():
            for seq in sorted(seqs):
                if (producer, seq) not in self._delivered_count:
                    r.lost.append((producer, seq))
        for (producer, seq), times in sorted(self._delivered_count.items(), key=_sort_key):
            if times > 1:
                r.duplicated.append((producer, seq, times))
            if seq in self._acked.get(producer, ()):
                continue
            if seq in self._maybe.get(producer, ()):
                r.recovered.append((producer, seq))
            else:
                r.unexpected.append((producer, seq))
        for consumer, items in self._deliveries.items():
            last: dict = {}
            for producer, seq in items:
                prev = last.get(producer)
                if prev is not None and seq < prev:
                    r.reordered.append((consumer, producer, prev, seq))
                if prev is None or seq > prev:
                    last[producer] = seq
        return r


def _sort_key(item):
    (producer, seq), _ = item
    return (str(producer), seq)
