"""The forecast bases beside Newton's ladder: HiCache's Hermite weights, least squares, FoCa's BDF2 + Heun."""

import numpy as np
import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from cgtaylor.experiments.registry import check_params
from cgtaylor.forecast_bases import bdf2_heun_weights, hermite_polynomial, least_squares_weights
from cgtaylor.taylor import TaylorLadder, make_ladder
from test_core_pipelines import RUNNERS
from tiny_pipelines import tiny_dit_pipeline, tiny_flux_pipeline

NEW_FORMULAS = ["hermite", "least_squares", "bdf2_heun"]
STEPS = 6  # three warm-up refreshes (enough for order 2), two forecast steps, the last step computed


def _fed(ladder, steps, values):
    for step, value in zip(steps, values):
        ladder.update(torch.tensor([float(value)]), step)
    return ladder


def _forecast(ladder, step) -> float:
    return float(ladder.forecast(step)[0])


def test_hermite_polynomials_follow_the_physicists_recursion():
    z = 0.7
    assert [hermite_polynomial(k, z) for k in range(4)] == pytest.approx(
        [1.0, 2 * z, 4 * z ** 2 - 2, 8 * z ** 3 - 12 * z])


def test_hermite_weighs_taylorseer_factors_with_scaled_hermite_polynomials():
    # factors after values 1, 2, 5 at steps 0, 1, 2: F0 = 5, F1 = 3, F2 = 3 - 1 = 2 (TaylorSeer's differences)
    ladder = _fed(make_ladder(2, "hermite", hermite_scale=0.5), [0, 1, 2], [1, 2, 5])
    assert [float(f) for f in ladder.factors] == [5.0, 3.0, 2.0]
    # at step 4, x = 2, sigma x = 1: w1 = 0.5 * H1(1) = 1, w2 = 0.25 * H2(1) / 2 = 0.25 * 2 / 2 = 0.25
    assert _forecast(ladder, 4) == pytest.approx(5 + 3 * 1.0 + 2 * 0.25)
    taylorseer = _fed(TaylorLadder(2, formula="taylorseer"), [0, 1, 2], [1, 2, 5])
    assert _forecast(taylorseer, 4) == pytest.approx(5 + 3 * 2 + 2 * 4 / 2)  # the monomials it replaces


@pytest.mark.parametrize("steps", [[0, 1, 2, 3, 4, 5], [0, 2, 3, 7, 8, 11]])
def test_least_squares_reproduces_a_polynomial_of_its_order_from_more_points(steps):
    quadratic = [3 - 2 * t + 0.5 * t * t for t in steps]
    ladder = _fed(make_ladder(2, "least_squares", fit_points=5), steps, quadratic)
    assert ladder.steps == steps[::-1][:5]
    assert _forecast(ladder, 14) == pytest.approx(3 - 2 * 14 + 0.5 * 196, rel=1e-9)


def test_least_squares_averages_noise_and_interpolates_by_default():
    noise = [0.3, -0.3, 0.3, -0.3]
    mean = _fed(make_ladder(0, "least_squares", fit_points=4), [0, 1, 2, 3], [5 + e for e in noise])
    assert _forecast(mean, 6) == pytest.approx(5.0)
    line = _fed(make_ladder(1, "least_squares", fit_points=4), [0, 1, 2, 3], [t + e for t, e in enumerate(noise)])
    slope, intercept = np.polyfit([0, 1, 2, 3], [t + e for t, e in enumerate(noise)], 1)
    assert _forecast(line, 6) == pytest.approx(intercept + 6 * slope)
    steps, values = [0, 2, 3, 7], [1.0, -2.0, 4.0, 0.5]
    newton = _fed(TaylorLadder(3), steps, values)
    interpolation = _fed(make_ladder(3, "least_squares"), steps, values)
    assert _forecast(interpolation, 9) == pytest.approx(_forecast(newton, 9), rel=1e-9)


def test_least_squares_weights_lower_the_degree_while_few_points_are_in():
    assert least_squares_weights([4], 9, degree=2) == pytest.approx([1.0])
    assert least_squares_weights([4, 2], 6, degree=2) == pytest.approx([2.0, -1.0])


def test_bdf2_heun_on_an_even_grid_matches_the_hand_computation():
    # y = t^2 at steps 0, 1, 2, order 2: slope at 2 is 4; predictor (4*4 - 1 + 2*4) / 3 = 23/3; slope at 3 of
    # the quadratic through (1, 1), (2, 4), (3, 23/3) is (1 - 16 + 23) / 2 = 4; Heun: 4 + (4 + 4) / 2 = 8
    ladder = _fed(make_ladder(2, "bdf2_heun"), [0, 1, 2], [0, 1, 4])
    assert _forecast(ladder, 3) == pytest.approx(8.0)


def test_bdf2_heun_divides_by_uneven_step_gaps():
    # y = t^2 at steps 1 and 3, order 1, target 4: h = 1, r = 1/2, slope (9 - 1) / 2 = 4; predictor
    # (2.25 * 9 - 0.25 * 1 + 1.5 * 4) / 2 = 13; the quadratic through (1, 1), (3, 9), (4, 13) is 4t - 3, slope 4;
    # Heun: 9 + (4 + 4) / 2 = 13
    ladder = _fed(make_ladder(1, "bdf2_heun"), [1, 3], [1, 9])
    assert _forecast(ladder, 4) == pytest.approx(13.0)
    line = _fed(make_ladder(2, "bdf2_heun"), [0, 3, 4], [2 - 0.5 * t for t in (0, 3, 4)])
    assert _forecast(line, 10) == pytest.approx(2 - 0.5 * 10)  # exact on straight lines at any spacing


def test_bdf2_heun_holds_the_last_value_until_two_refreshes_are_in():
    ladder = _fed(make_ladder(1, "bdf2_heun"), [0], [7])
    assert _forecast(ladder, 3) == 7.0
    assert bdf2_heun_weights([5, 2], 5, order=1) == [1.0, 0.0]
    with pytest.raises(ValueError, match="two refresh steps"):
        bdf2_heun_weights([5], 6, order=1)


@pytest.mark.parametrize("formula, options, kept", [
    ("hermite", {}, 3), ("least_squares", {}, 3), ("least_squares", {"fit_points": 6}, 6), ("bdf2_heun", {}, 3)])
def test_the_cache_holds_what_each_basis_keeps(formula, options, kept):
    ladder = make_ladder(2, formula, **options)
    for step in range(9):
        ladder.update(torch.ones(8, dtype=torch.float32) * step, step)
    assert ladder.nbytes == kept * 8 * 4
    assert ladder.shape == (8,) and ladder.last_step == 8
    ladder.clear()
    assert ladder.nbytes == 0 and not ladder.ready
    with pytest.raises(ValueError, match="steps must increase"):
        _fed(make_ladder(1, formula), [2, 2], [0, 0])


@pytest.mark.parametrize("changes, field", [
    ({"taylor_formula": "chebyshev"}, "taylor_formula"),
    ({"taylor_formula": "hermite", "hermite_scale": 0}, "hermite_scale"),
    ({"taylor_formula": "hermite", "hermite_scale": float("nan")}, "hermite_scale"),
    ({"hermite_scale": "0.5"}, "hermite_scale"),
    ({"fit_points": 4}, "fit_points"),  # newton: fit_points does not apply
    ({"taylor_formula": "least_squares", "last_block_order": 2, "fit_points": 2}, "fit_points"),
    ({"taylor_formula": "least_squares", "fit_points": 17}, "fit_points"),
    ({"taylor_formula": "least_squares", "fit_points": True}, "fit_points"),
])
def test_bad_basis_options_are_rejected_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"CGTaylorConfig.{field}"):
        CGTaylorConfig(**changes)


def test_the_method_registry_sweeps_the_new_bases():
    for formula in NEW_FORMULAS:
        assert check_params("cg-taylor", {"taylor_formula": formula})["taylor_formula"] == formula
    assert check_params("cg-taylor", {"taylor_formula": "least_squares", "fit_points": 5})["fit_points"] == 5
    with pytest.raises(ValueError):
        check_params("cg-taylor", {"taylor_formula": "chebyshev"})


def _newton_cache_bytes(pipe, run) -> dict:
    """The cache of order-2 Newton ladders (three tensors each) over a fully computed run."""
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0, first_block_order=2, last_block_order=2))
    try:
        run(pipe, STEPS)
        return dict(cg_taylor_stats(pipe).cache_bytes)
    finally:
        remove_cg_taylor(pipe)


@pytest.fixture(scope="module")
def pipes():
    """Each tiny pipeline with its plain output and the cache that order-2 Newton ladders hold on it."""
    pipes = {"dit": tiny_dit_pipeline(), "flux": tiny_flux_pipeline()}
    return {name: (pipe, RUNNERS[name](pipe, STEPS), _newton_cache_bytes(pipe, RUNNERS[name]))
            for name, pipe in pipes.items()}


@pytest.mark.parametrize("name", ["dit", "flux"])
@pytest.mark.parametrize("formula", NEW_FORMULAS)
def test_threshold_zero_equals_the_plain_model_and_forecasts_stand_in_otherwise(name, formula, pipes):
    (pipe, reference, newton_bytes), run = pipes[name], RUNNERS[name]
    options = dict(taylor_formula=formula, last_block_order=2, first_block_order=2)
    if formula == "least_squares":
        options["fit_points"] = 4
    try:
        apply_cg_taylor(pipe, CGTaylorConfig(threshold=0, **options))
        torch.testing.assert_close(run(pipe, STEPS), reference, rtol=1e-5, atol=1e-5)
        assert cg_taylor_stats(pipe).forecast_steps == 0
        kept = 4 if formula == "least_squares" else 3  # features (or factors) per forecaster after six refreshes
        assert cg_taylor_stats(pipe).cache_bytes == {c: b * kept // 3 for c, b in newton_bytes.items()}
        apply_cg_taylor(pipe, CGTaylorConfig(threshold=1e9, warmup_steps=3, **options))
        forecast = run(pipe, STEPS)
        stats = cg_taylor_stats(pipe)
        for context in stats.contexts:
            assert [r.step for r in stats.for_context(context) if not r.computed] == [3, 4]
        assert torch.isfinite(forecast).all() and not torch.equal(forecast, reference)
    finally:
        remove_cg_taylor(pipe)
