"""Paired gains, the hierarchical bootstrap, verdicts and power, on simulated studies with known effects."""

from __future__ import annotations

import numpy as np
import pytest

from frontload.analysis.stats import Interval, bootstrap, direction, paired_gains, verdict

TRUE_GAIN = 0.1


def _study(rng, seeds: int, questions: int, seed_sd: float, binary: bool) -> dict[int, np.ndarray]:
    """Per-question paired gains of one simulated study whose true mean gain is TRUE_GAIN."""
    out = {}
    for s in range(seeds):
        shift = TRUE_GAIN + seed_sd * rng.standard_normal()
        if binary:
            # Sampled accuracy: each question has its own difficulty, the arm is `shift` likelier right.
            p = rng.uniform(0.1, 0.6, questions)
            out[s] = (rng.random(questions) < p + shift).astype(float) - (rng.random(questions) < p)
        else:
            out[s] = shift + rng.standard_normal(questions)
    return out


@pytest.mark.parametrize(
    ("seeds", "questions", "seed_sd", "binary", "most"),
    [
        (1, 60, 0.0, False, 0.99),
        (1, 80, 0.0, True, 0.99),
        # Three seeds whose spread is half the question noise: the t bound on 2 degrees of freedom makes
        # the interval conservative here, and that is the side to err on.
        (3, 100, 0.05, False, 1.0),
        # Five seeds that disagree (seed spread five times the question noise): the plain bootstrap
        # percentiles covered 84-86% of such studies.
        (5, 300, 0.15, True, 0.99),
    ],
    ids=["one-seed", "one-seed-accuracy", "three-seeds", "five-seeds-that-disagree"],
)
def test_interval_covers_the_true_gain_at_about_the_nominal_rate(seeds, questions, seed_sd, binary, most):
    rng = np.random.default_rng(7)
    hits = 0
    for i in range(200):
        iv = bootstrap(_study(rng, seeds, questions, seed_sd, binary), resamples=1000, seed=i)
        hits += iv.low <= TRUE_GAIN <= iv.high
    assert 0.92 <= hits / 200 <= most


def test_t_quantiles_match_the_printed_tables():
    from frontload.analysis.stats import t_quantile

    for df, table in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)]:
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-3)
    assert t_quantile(0.95, 4) == pytest.approx(2.132, abs=1e-3)


def test_half_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(3)
    ratios = []
    for i in range(5):
        small = bootstrap({0: rng.standard_normal(100)}, resamples=2000, seed=i)
        large = bootstrap({0: rng.standard_normal(400)}, resamples=2000, seed=i)
        ratios.append(large.half_width / small.half_width)
    # Four times the questions: half the width.
    assert np.mean(ratios) == pytest.approx(0.5, abs=0.06)


def test_bootstrap_is_deterministic_given_its_seed_and_reduces_to_questions_with_one_seed():
    rng = np.random.default_rng(0)
    values = {1: rng.standard_normal(50), 2: rng.standard_normal(50)}
    assert bootstrap(values, resamples=500, seed=11) == bootstrap(values, resamples=500, seed=11)
    assert bootstrap(values, resamples=500, seed=11) != bootstrap(values, resamples=500, seed=12)
    # One seed: the ordinary question bootstrap, whose standard error is sd / sqrt(n).
    one = bootstrap({5: values[1]}, resamples=4000, seed=0)
    assert one.n_seeds == 1 and one.n_questions == 50
    assert one.mean == pytest.approx(values[1].mean())
    assert one.se == pytest.approx(values[1].std() / np.sqrt(50), rel=0.1)
    # Two seeds: the point estimate is the mean of the per-seed means; seed variance widens the interval.
    two = bootstrap(values, resamples=2000, seed=0)
    assert two.mean == pytest.approx((values[1].mean() + values[2].mean()) / 2)
    apart = bootstrap({1: values[1] + 1.0, 2: values[2] - 1.0}, resamples=2000, seed=0)
    assert apart.half_width > 2 * two.half_width
    assert bootstrap({}, resamples=10) is None


def test_paired_gain_equals_a_hand_computation_on_a_tiny_table():
    arm = {1: {"q1": 1.0, "q2": 0.0, "q3": 1.0}, 2: {"q1": 1.0, "q2": 1.0, "q3": 0.0}, 3: {"q1": 1.0}}
    base = {1: {"q1": 0.0, "q2": 0.0, "q3": 1.0, "q4": 1.0}, 2: {"q1": 1.0, "q2": 0.0, "q3": 1.0}}
    gains = paired_gains(arm, base, "accuracy")
    # Seed 3 has no baseline and q4 no arm score: both are left out of the pairing.
    assert set(gains) == {1, 2}
    assert gains[1].tolist() == [1.0, 0.0, 0.0] and gains[2].tolist() == [0.0, 1.0, -1.0]
    assert bootstrap(gains, resamples=100).mean == pytest.approx((1 / 3 + 0 / 3) / 2)
    # Lower is better for NLL: the gain is baseline minus arm.
    nll = paired_gains({0: {"q": 1.5}}, {0: {"q": 2.0}}, "answer_nll")
    assert nll[0].tolist() == [0.5]
    assert direction("solution_nll") == direction("perplexity") == -1 and direction("pass@16") == 1


def _iv(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, (high - low) / 4, 1, 10)


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([(0.1, 0.3), (0.05, 0.2), (0.01, 0.1)], "persists"),
        ([(0.1, 0.3), (-0.05, 0.2), (-0.1, 0.1)], "washed_out"),
        # Not above zero after the last phase, but too wide to rule out the first gain: not a wash-out.
        ([(0.1, 0.14), (-0.07, 0.41), (-0.08, 0.43)], "inconclusive"),
        ([(-0.1, 0.1), (0.0, 0.2), (0.05, 0.2)], "emerges"),
        ([(0.1, 0.3), (-0.1, 0.1), (-0.3, -0.1)], "hurts"),
        ([(-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)], "inconclusive"),
        ([(0.1, 0.3), (-0.1, 0.1), (0.1, 0.3)], "inconclusive"),  # gone after SFT, back after RL
        ([(0.1, 0.3)], "persists"),
        ([(-0.1, 0.1), None, (0.05, 0.2)], "emerges"),
        ([], "inconclusive"),
    ],
)
def test_verdict_rules(intervals, expected):
    assert verdict([None if i is None else _iv(*i) for i in intervals]) == expected


def test_min_detectable_gain_is_the_half_width_plus_the_power_quantile():
    iv = bootstrap({0: np.random.default_rng(1).standard_normal(200)}, resamples=2000)
    # One seed: 1 + 0.84 / 1.96 half widths, about 2.8 standard errors (a 95% half width is 1.96 of them).
    assert iv.min_detectable == pytest.approx(1.4294 * iv.half_width, rel=1e-4)
    assert iv.min_detectable == pytest.approx(2.8 * iv.se, rel=0.1)
    # Five seeds: the interval uses t on 4 degrees of freedom, so does the power: 1 + 0.941 / 2.776.
    rng = np.random.default_rng(2)
    five = bootstrap({s: s + rng.standard_normal(200) for s in range(5)}, resamples=2000)
    assert five.min_detectable == pytest.approx(1.3389 * five.half_width, rel=1e-4)
