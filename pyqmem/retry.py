"""When a failed record is tried again: exponential backoff with jitter.

A consumer group uses a :class:`RetryPolicy` for ``msg.nack()`` without a
delay and for ``GroupConsumer.run`` when the handler raises.  The delay before
the next delivery of a record that has been delivered ``n`` times is::

    base  = min(maximum, initial * multiplier ** (n - 1))
    delay = uniform(base * (1 - jitter), base)        # "equal-ish" jitter

so the first retry waits about ``initial`` seconds, each later one
``multiplier`` times longer, never more than ``maximum``, and concurrent
failures spread out instead of retrying in lockstep (jitter only shortens a
delay, so ``maximum`` is a true bound).  ``jitter=0`` makes delays exact.
How many deliveries a record gets before it is dead-lettered is the
consumer's ``max_deliveries``, not part of the policy.
"""

import math
import random as _random
from typing import Optional

__all__ = ["RetryPolicy"]


def _finite(value: float) -> bool:
    """math.isfinite, and False for an int too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _seconds(name: str, value: float, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not _finite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, not {value!r}"
        )
    return float(value)


class RetryPolicy:
    """Exponential backoff with jitter (see the module text).

    ``initial``: delay before the first retry, seconds (default 0.1);
    ``multiplier``: growth per delivery, >= 1 (default 2.0);
    ``maximum``: cap on any delay, seconds (default 30.0);
    ``jitter``: fraction in [0, 1] by which a delay may be shortened at
    random (default 0.2); ``rng``: a ``random.Random`` for reproducible
    delays (default: a private one).
    """

    __slots__ = ("initial", "multiplier", "maximum", "jitter", "_rng")

    def __init__(
        self,
        initial: float = 0.1,
        multiplier: float = 2.0,
        maximum: float = 30.0,
        jitter: float = 0.2,
        *,
        rng: Optional[_random.Random] = None,
    ) -> None:
        self.initial = _seconds("initial", initial)
        self.maximum = _seconds("maximum", maximum)
        if self.initial > self.maximum:
            raise ValueError(f"initial ({initial!r}) is larger than maximum ({maximum!r})")
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise TypeError(f"multiplier must be a number, not {type(multiplier).__name__}")
        if not _finite(multiplier) or multiplier < 1:
            raise ValueError(f"multiplier must be a finite number >= 1, not {multiplier!r}")
        self.multiplier = float(multiplier)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise TypeError(f"jitter must be a number, not {type(jitter).__name__}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {jitter!r}")
        self.jitter = float(jitter)
        if rng is not None and not callable(getattr(rng, "uniform", None)):
            raise TypeError("rng must be a random.Random (or have uniform(a, b))")
        self._rng = rng or _random.Random()

    def base(self, delivery_count: int) -> float:
        """The delay without jitter after the `delivery_count`-th delivery
        failed (1 for the first)."""
        if isinstance(delivery_count, bool) or not isinstance(delivery_count, int):
            raise TypeError(f"delivery_count must be an int, not {type(delivery_count).__name__}")
        if delivery_count < 1:
            raise ValueError(f"delivery_count starts at 1, not {delivery_count}")
        if self.multiplier == 1 or self.initial == 0:
            return min(self.initial, self.maximum)
        # compare exponents, not powers: a huge delivery_count must not overflow
        steps = math.log(self.maximum / self.initial, self.multiplier) if self.maximum else 0
        if delivery_count - 1 >= steps:
            return self.maximum
        return min(self.maximum, self.initial * self.multiplier ** (delivery_count - 1))

    def delay(self, delivery_count: int) -> float:
        """Seconds to wait before delivering again a record whose
        `delivery_count`-th delivery failed."""
        base = self.base(delivery_count)
        if not self.jitter or not base:
            return base
        return self._rng.uniform(base * (1.0 - self.jitter), base)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(initial={self.initial!r}, multiplier={self.multiplier!r}, "
            f"maximum={self.maximum!r}, jitter={self.jitter!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return (self.initial, self.multiplier, self.maximum, self.jitter) == (
            other.initial,
            other.multiplier,
            other.maximum,
            other.jitter,
        )

    __hash__ = None  # type: ignore[assignment]
