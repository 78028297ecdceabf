"""How sure the answer is: paired gains, hierarchical-bootstrap intervals, verdicts and power (numpy only).

Every comparison is paired: an arm and the baseline are scored on identical question ids, per seed, and
a *gain* is always an improvement (``arm - baseline`` for scores, ``baseline - arm`` for metrics where
lower is better, see :func:`direction`), so ``gain > 0`` reads "the arm is better" for every metric.

The interval of a mean over seeds and questions is a hierarchical bootstrap: each resample draws the
seeds with replacement, then, independently for every drawn seed, its questions with replacement,
and takes the mean over drawn seeds of the mean over drawn questions; the interval is the 2.5% and
97.5% percentiles of those resampled means (for ``level = 0.95``), widened about the mean for the
few seeds a study has (below). With one seed it is the ordinary bootstrap over questions.
Invariants: the same inputs, resamples and ``seed`` give the same interval; the point estimate is
the plain mean (mean over seeds of the per-seed mean), never a bootstrap average.

Few seeds: resampling n seeds spreads their mean by only (n - 1) / n of its variance, and a
percentile is a normal quantile where n seeds warrant Student's t with n - 1 degrees of freedom. So
with n >= 2 seeds the interval is never narrower than the t interval on the per-seed means
(``mean ± t(n-1) * sd(seed means) / sqrt(n)``), and the standard error never smaller than
``sd(seed means) / sqrt(n)``. When seeds disagree the t interval is the wider one: in simulated
five-seed studies the plain percentiles covered the true gain in 84-86% of studies, this interval in
about 95% (``tests/analysis/test_stats.py``). When seeds agree the bootstrap, which also counts
question sampling, is the wider one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Metrics where a smaller number is better; everything else (accuracy, pass@k, reward) is higher-is-better.
LOWER_IS_BETTER = ("perplexity", "loss")
LOWER_IS_BETTER_SUFFIXES = ("_nll", "_loss")
VERDICTS = ("persists", "washed_out", "emerges", "hurts", "inconclusive")
# z quantiles behind the minimum detectable effect: two-sided 5% test, 80% power.
Z_ALPHA, Z_POWER = 1.959964, 0.841621
RESAMPLES = 2000
METHOD_VERSION = 2  # of how intervals are computed; a store made by another version is recomputed at ingest
BOOTSTRAP_SEED = 0
_CHUNK = 1 << 22  # most indices drawn at once, to bound memory on large studies


def direction(metric: str) -> int:
    """+1 when a larger value of ``metric`` is better, -1 when a smaller one is (``*_nll``, perplexity, loss)."""
    lower = metric in LOWER_IS_BETTER or metric.endswith(LOWER_IS_BETTER_SUFFIXES)
    return -1 if lower else 1


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and questions with its bootstrap interval."""

    mean: float
    low: float
    high: float
    se: float  # standard deviation of the resampled means
    n_seeds: int
    n_questions: int  # questions per seed (the smallest count when seeds differ)

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2

    @property
    def min_detectable(self) -> float:
        """The smallest true gain this design finds with 80% power in a two-sided 5% test: the interval's
        half width times :func:`detectable_ratio` (1.43 with one seed, 1.34 with five)."""
        return detectable_ratio(self.n_seeds) * self.half_width


def paired_gains(
    arm: Mapping[int, Mapping[str, float]], baseline: Mapping[int, Mapping[str, float]], metric: str
) -> dict[int, np.ndarray]:
    """Per seed, the gain on every question both sides answered: ``direction(metric) * (arm - baseline)``.

    ``arm`` and ``baseline`` map seed -> question id -> score. Seeds or questions only one side has are left
    out (pairing needs both); questions are taken in sorted id order.
    """
    sign = direction(metric)
    out = {}
    for seed in sorted(set(arm) & set(baseline)):
        ids = sorted(set(arm[seed]) & set(baseline[seed]))
        if ids:
            a = np.array([arm[seed][q] for q in ids], dtype=float)
            b = np.array([baseline[seed][q] for q in ids], dtype=float)
            out[seed] = sign * (a - b)
    return out


def bootstrap(
    values: Mapping[int, Sequence[float] | np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> Interval | None:
    """The mean of ``values`` (seed -> per-question values) with its hierarchical-bootstrap interval.

    None when there is nothing to average.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    groups = [np.asarray(values[s], dtype=float) for s in sorted(values) if len(values[s])]
    if not groups:
        return None
    n_seeds = len(groups)
    mean = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    # Stage 1: which seed fills each of the n_seeds slots of every resample.
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    # Stage 2: every slot gets its own question resample of the seed it drew; slots drawing seed s
    # need as many question means of s as there are such slots.
    slot_means = np.empty((resamples, n_seeds))
    for s, g in enumerate(groups):
        rows, cols = np.nonzero(picks == s)
        slot_means[rows, cols] = _resampled_means(rng, g, len(rows))
    est = slot_means.mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(est, [tail, 1 - tail])
    se = float(est.std(ddof=1)) if resamples > 1 else 0.0
    if n_seeds > 1:
        # Never narrower than Student's t interval on the per-seed means (see the module's docstring).
        seed_se = float(np.std([g.mean() for g in groups], ddof=1)) / math.sqrt(n_seeds)
        arm = t_quantile(1 - tail, n_seeds - 1) * seed_se
        low, high, se = min(low, mean - arm), max(high, mean + arm), max(se, seed_se)
    return Interval(mean, float(low), float(high), se, n_seeds, min(len(g) for g in groups))


def detectable_ratio(n_seeds: int) -> float:
    """The smallest true gain a two-sided 5% test finds with 80% power, in interval half widths.

    A gain is found when its interval excludes zero, so 80% power needs the true gain a half width
    plus 0.84 standard errors from zero: ``1 + 0.84 / 1.96`` half widths with one seed, and with more
    the same ratio of Student's t quantiles on ``n_seeds - 1`` degrees of freedom, which the interval
    uses (1.34 for five seeds).
    """
    if n_seeds < 2:
        return 1 + Z_POWER / Z_ALPHA
    return 1 + t_quantile(0.80, n_seeds - 1) / t_quantile(0.975, n_seeds - 1)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection on its CDF."""
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < 2 * p - 1:
        hi *= 2
    for _ in range(60):  # 2**-60 of the bracket: past double precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, df) < 2 * p - 1 else (lo, mid)
    return (lo + hi) / 2


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = 1.0
    for k in range(1, (df - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def _resampled_means(rng: np.random.Generator, g: np.ndarray, count: int) -> np.ndarray:
    """``count`` means of ``g`` resampled with replacement."""
    out = np.empty(count)
    step = max(1, _CHUNK // max(1, len(g)))
    for i in range(0, count, step):
        m = min(step, count - i)
        out[i : i + m] = g[rng.integers(0, len(g), size=(m, len(g)))].mean(axis=1)
    return out


def good(interval: Interval | None) -> bool:
    """The interval lies wholly above zero: the arm is better (gains are improvements)."""
    return interval is not None and interval.low > 0


def bad(interval: Interval | None) -> bool:
    """The interval lies wholly below zero: the arm is worse."""
    return interval is not None and interval.high < 0


def verdict(by_phase: Sequence[Interval | None]) -> str:
    """What the gain intervals after each phase (in chain order, first = pretraining) say.

    * ``persists``: above zero after every phase;
    * ``hurts``: below zero after the last phase;
    * ``washed_out``: above zero after the first phase, not after the last, and the last interval
      lies below the first gain (the data rule out that the first gain was kept whole; an interval
      too wide to say so is ``inconclusive``);
    * ``emerges``: not above zero after the first phase, above zero after the last;
    * ``inconclusive``: anything else (e.g. no interval excludes zero, or a gain that comes and goes).
    """
    if not by_phase:
        return "inconclusive"
    first, last = by_phase[0], by_phase[-1]
    if all(good(i) for i in by_phase):
        return "persists"
    if bad(last):
        return "hurts"
    if good(first) and not good(last) and last is not None and last.high < first.mean:
        return "washed_out"
    if not good(first) and good(last):
        return "emerges"
    return "inconclusive"
