"""Piecewise-linear schedules over the fraction of training: `((train_frac, value), ...)`.

Constant before the first knot and after the last; the controls that use them (filter widths,
image blur, the near bound of training rays) only ever relax, so values never increase.
"""

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError


def check_schedule(schedule, what: str, allow_negative: bool = False) -> tuple:
    """`schedule` as ((frac, value), ...) or UserError: fractions increasing in [0, 1], values
    finite, non-increasing (controls that only ever relax) and, unless `allow_negative`,
    non-negative."""
    try:
        knots = tuple((float(f), float(v)) for f, v in schedule)
    except (TypeError, ValueError):
        raise UserError(f"{what}={schedule!r} must be pairs (train_frac, value), e.g. "
                        "((0.0, 0.1), (0.3, 0.0))") from None
    fracs = [f for f, _ in knots]
    values = [v for _, v in knots]
    if any(not 0 <= f <= 1 for f in fracs) or fracs != sorted(set(fracs)):
        raise UserError(f"{what}={schedule!r}: the fractions of training must increase within "
                        "[0, 1]")
    if any(not np.isfinite(v) for v in values):
        raise UserError(f"{what}={schedule!r}: values must be finite")
    if not allow_negative and any(v < 0 for v in values):
        raise UserError(f"{what}={schedule!r}: values must be non-negative")
    if any(b > a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise UserError(f"{what}={schedule!r}: values must not increase (the control relaxes "
                        "over training)")
    return knots


def schedule_value(schedule: Sequence, train_frac):
    """The value of a piecewise-linear schedule at `train_frac` (0 for an empty schedule)."""
    if not schedule:
        return jnp.zeros((), jnp.float32)
    fracs = jnp.asarray([f for f, _ in schedule], jnp.float32)
    values = jnp.asarray([v for _, v in schedule], jnp.float32)
    return jnp.interp(jnp.asarray(train_frac, jnp.float32), fracs, values)


def max_value(schedule: Sequence) -> float:
    """The largest value a schedule takes (its first, as values never increase)."""
    return float(schedule[0][1]) if schedule else 0.0


def end_fraction(schedule: Sequence) -> float:
    """The fraction of training from which a schedule stays 0 (0 if empty; inf if never)."""
    if not schedule:
        return 0.0
    if float(schedule[-1][1]) > 0:
        return float("inf")
    return min(float(f) for f, v in schedule if float(v) == 0)


def fraction_step(frac: float, max_steps: int) -> int:
    """The first step (`state.step`) at or after the fraction `frac` of training."""
    return math.ceil(frac * max_steps - 1e-9)
