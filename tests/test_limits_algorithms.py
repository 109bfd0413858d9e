"""Each rate algorithm, on a fake clock: never over its bound, keeps granting, honours refunds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurry_ray.enums import RateLimitAlgorithm
from concurry_ray.limits.algorithms import RATE_ALGORITHMS, Resource

TOL = 1e-6

# One step: wait dt, request a fraction of capacity, later report a fraction of it as used.
steps = st.lists(
    st.tuples(
        st.floats(0, 2.0),  # dt, in windows
        st.floats(0.01, 1.0),  # amount, as a fraction of capacity
        st.floats(0, 1.0),  # used, as a fraction of the amount
        st.integers(0, 4),  # steps until the acquisition ends
    ),
    min_size=1,
    max_size=40,
)
shapes = st.tuples(st.sampled_from([1, 3, 10, 100]), st.sampled_from([0.5, 1.0, 60.0]))


def simulate(algorithm: str, capacity: float, window: float, script) -> list[tuple[float, float]]:
    """Run a greedy client: each request waits exactly the delay the meter asks for, then takes.

    Returns (grant time, units used) for every grant.
    """
    meter = RATE_ALGORITHMS[RateLimitAlgorithm(algorithm)](capacity, window)
    now, grants, open_ = 0.0, [], []
    for index, (dt, fraction, used_fraction, hold) in enumerate(script):
        now += dt * window
        for entry in [e for e in open_ if e[0] <= index]:
            open_.remove(entry)
            meter.finish(entry[1], entry[2], now)
        amount = max(1e-3, round(fraction * capacity, 3))
        delay = meter.delay(amount, now)
        assert delay < math.inf, "a request that fits the capacity must be granted eventually"
        now += delay
        assert meter.delay(amount, now) <= TOL * window, "after waiting the delay the request must fit"
        receipt = meter.take(amount, now)
        used = amount * used_fraction
        open_.append((index + hold, receipt, used))
        grants.append((now, used))
    for _, receipt, used in open_:
        meter.finish(receipt, used, now)
    return grants


@settings(max_examples=150, deadline=None)
@given(shapes, steps)
def test_sliding_window_never_exceeds_capacity_in_any_window(shape, script):
    capacity, window = shape
    grants = simulate("sliding_window", capacity, window, script)
    for start, _ in grants:
        in_window = sum(used for t, used in grants if start <= t < start + window)
        assert in_window <= capacity + TOL * capacity


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
@settings(max_examples=150, deadline=None)
@given(shape=shapes, script=steps)
def test_buckets_burst_at_most_capacity_then_refill_rate(algorithm, shape, script):
    capacity, window = shape
    rate = capacity / window
    grants = simulate(algorithm, capacity, window, script)
    for i, (start, _) in enumerate(grants):
        for end, _ in grants[i:]:
            used = sum(u for t, u in grants if start <= t <= end)
            assert used <= capacity + rate * (end - start) + TOL * capacity


@settings(max_examples=150, deadline=None)
@given(shapes, steps)
def test_leaky_bucket_spaces_grants_evenly(shape, script):
    capacity, window = shape
    rate = capacity / window
    grants = simulate("leaky_bucket", capacity, window, script)
    for i in range(len(grants)):
        for j in range(i + 1, len(grants)):
            used_before_j = sum(u for _, u in grants[i:j])
            assert used_before_j <= rate * (grants[j][0] - grants[i][0]) + TOL * capacity


@settings(max_examples=150, deadline=None)
@given(shapes, steps)
def test_fixed_window_counts_at_most_capacity_per_window(shape, script):
    capacity, window = shape
    per_window: dict[int, float] = {}
    for t, used in simulate("fixed_window", capacity, window, script):
        index = math.floor(t / window)
        per_window[index] = per_window.get(index, 0) + used
    assert all(total <= capacity + TOL * capacity for total in per_window.values())


@pytest.mark.parametrize("algorithm", sorted(RATE_ALGORITHMS))
@given(shape=shapes, fraction=st.floats(0.01, 1.0))
def test_unused_units_returned_at_once_are_refunded(algorithm, shape, fraction):
    capacity, window = shape
    meter = RATE_ALGORITHMS[RateLimitAlgorithm(algorithm)](capacity, window)
    amount = fraction * capacity
    now = 10 * window + 0.25 * window
    receipt = meter.take(amount, now)
    meter.finish(receipt, 0, now)
    assert meter.delay(amount, now) == 0
    assert meter.available(now) == pytest.approx(capacity)


@pytest.mark.parametrize("algorithm", sorted(RATE_ALGORITHMS))
def test_saturated_meter_waits_before_granting(algorithm):
    meter = RATE_ALGORITHMS[RateLimitAlgorithm(algorithm)](10, 1.0)
    meter.saturate(5.0, grace=0)
    assert meter.delay(1, 5.0) > 0
    assert meter.available(5.0) == pytest.approx(0)


def test_token_bucket_refund_after_refill_does_not_allow_a_double_burst():
    meter = RATE_ALGORITHMS[RateLimitAlgorithm.TokenBucket](10, 1.0)
    early = meter.take(10, 0.0)
    now = 5.0  # the bucket has refilled to full while `early` is still open
    meter.take(10, now)
    meter.finish(early, 0, now)
    assert meter.delay(1, now) > 0


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=60))
def test_resource_never_over_capacity_and_returns_whole(ops):
    meter, held = Resource(3), []
    for take, amount in ops:
        if take and meter.delay(amount, 0) == 0:
            held.append(meter.take(amount, 0))
        elif held:
            meter.finish(held.pop(0), 0, 0)
        assert 0 <= meter.capacity - meter.available(0) <= 3
    for receipt in held:
        meter.finish(receipt, 0, 0)
    assert meter.available(0) == 3
