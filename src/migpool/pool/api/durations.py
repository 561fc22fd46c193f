"""`migpool.time` (the reference's `sky.time`): durations in seconds, for timeouts."""

from __future__ import annotations


def minutes(n: float) -> float:
    return n * 60.0


def hours(n: float) -> float:
    return n * 3600.0


def days(n: float) -> float:
    return n * 86400.0
