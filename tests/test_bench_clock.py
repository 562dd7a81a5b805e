"""The shared bench clock: virtual time moves only when advanced; listeners follow it."""

import pytest

from devices.bench.clock import SimClock


def test_virtual_clock_moves_only_when_advanced_and_notifies_listeners() -> None:
    clock = SimClock()
    seen: list[float] = []
    clock.subscribe(seen.append)
    assert clock.now() == 0.0
    assert clock.advance(0.0333) == pytest.approx(0.0333)
    clock.advance_to(1.0)
    clock.advance_to(0.5)  # already past: no-op, time never runs backwards
    assert clock.now() == pytest.approx(1.0)
    clock.unsubscribe(seen.append)
    clock.unsubscribe(seen.append)  # idempotent
    clock.advance(1.0)
    assert seen == pytest.approx([0.0333, 1.0, 1.0])


def test_negative_advance_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SimClock().advance(-1e-3)


def test_non_finite_advance_is_refused_and_leaves_the_time() -> None:
    """advance(NaN) made the virtual time NaN for good (and advance_to(NaN) was a silent no-op)."""
    clock = SimClock()
    clock.advance(1.0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="non-finite"):
            clock.advance(bad)
        with pytest.raises(ValueError, match="non-finite"):
            clock.advance_to(bad)
    assert clock.now() == 1.0
