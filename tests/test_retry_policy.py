"""RetryPolicy: exponential backoff with jitter, bounded, validated."""
import math
import random

import pytest

from pyqmem.retry import RetryPolicy


def test_delays_grow_by_the_multiplier_from_initial_without_jitter():
    p = RetryPolicy(initial=0.1, multiplier=2.0, maximum=30.0, jitter=0)
    assert [p.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])


def test_delay_is_capped_at_maximum_even_for_huge_delivery_counts():
    p = RetryPolicy(initial=0.5, multiplier=3.0, maximum=10.0, jitter=0)
    assert p.delay(4) == pytest.approx(10.0)          # 0.5 * 27 = 13.5 -> 10
    assert p.delay(10**9) == 10.0                      # no OverflowError
    assert p.base(2**62) == 10.0


def test_jitter_only_shortens_a_delay_and_stays_within_its_fraction():
    p = RetryPolicy(initial=1.0, multiplier=2.0, maximum=8.0, jitter=0.25,
                    rng=random.Random(7))
    for n in range(1, 8):
        base = min(8.0, 2.0 ** (n - 1))
        for _ in range(200):
            d = p.delay(n)
            assert base * 0.75 <= d <= base
    spread = {round(p.delay(3), 9) for _ in range(50)}
    assert len(spread) > 10                            # it really is random


def test_same_seed_gives_the_same_delays():
    a = RetryPolicy(rng=random.Random(42))
    b = RetryPolicy(rng=random.Random(42))
    assert [a.delay(n) for n in range(1, 20)] == [b.delay(n) for n in range(1, 20)]


def test_multiplier_one_gives_a_constant_delay():
    p = RetryPolicy(initial=0.3, multiplier=1, maximum=1, jitter=0)
    assert {p.delay(n) for n in (1, 2, 50, 10**6)} == {0.3}


def test_zero_initial_means_retry_at_once():
    p = RetryPolicy(initial=0, maximum=0, jitter=0.5)
    assert p.delay(1) == 0 and p.delay(99) == 0


@pytest.mark.parametrize("kw, exc", [
    ({"initial": -1}, ValueError),
    ({"initial": math.inf}, ValueError),
    ({"initial": math.nan}, ValueError),
    ({"initial": "1"}, TypeError),
    ({"initial": True}, TypeError),
    ({"maximum": -0.1}, ValueError),
    ({"initial": 5, "maximum": 1}, ValueError),
    ({"multiplier": 0.5}, ValueError),
    ({"multiplier": math.inf}, ValueError),
    ({"multiplier": 10**400}, ValueError),   # too large for a float: not OverflowError
    ({"initial": 10**400}, ValueError),
    ({"multiplier": None}, TypeError),
    ({"jitter": 1.5}, ValueError),
    ({"jitter": -0.1}, ValueError),
    ({"jitter": "0.1"}, TypeError),
    ({"rng": object()}, TypeError),
])
def test_bad_parameters_are_refused_with_a_typed_error(kw, exc):
    with pytest.raises(exc):
        RetryPolicy(**kw)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-3, ValueError), (1.0, TypeError),
                                    (True, TypeError), ("2", TypeError)])
def test_delivery_count_must_be_a_positive_int(n, exc):
    with pytest.raises(exc):
        RetryPolicy().delay(n)


def test_equal_policies_compare_equal_and_repr_names_the_parameters():
    assert RetryPolicy(0.2, 3, 9, 0) == RetryPolicy(initial=0.2, multiplier=3.0, maximum=9.0,
                                                    jitter=0.0)
    assert RetryPolicy(0.2) != RetryPolicy(0.3)
    assert "multiplier=2.0" in repr(RetryPolicy())
