import pytest
import torch

from cgtaylor import TaylorLadder


def polynomial(degree: int):
    coefficients = torch.randn(degree + 1, 3, 5, generator=torch.Generator().manual_seed(degree), dtype=torch.float64)
    return lambda t: sum(c * float(t) ** i for i, c in enumerate(coefficients))


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("steps", [[0, 1, 2, 3, 4], [0, 2, 3, 7, 8, 12]])
def test_newton_ladder_reproduces_polynomial_of_its_order_exactly(order, steps):
    f = polynomial(order)
    ladder = TaylorLadder(order, formula="newton")
    for s in steps[: order + 1]:
        ladder.update(f(s), s)
    for t in [steps[order] + 1, steps[order] + 5, 30]:
        torch.testing.assert_close(ladder.forecast(t), f(t), rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("order", [2, 3])
def test_newton_ladder_is_not_exact_one_order_up(order):
    f = polynomial(order)
    ladder = TaylorLadder(order - 1, formula="newton")
    for s in range(order):
        ladder.update(f(s), s)
    assert not torch.allclose(ladder.forecast(order + 3), f(order + 3))


def test_taylorseer_formula_matches_its_recursion():
    # f(t) = t^2 refreshed at 0, 1, 2: F = [4, 3, 2]; forecast at 3 = 4 + 3 + 2/2 = 8 (not 9: not exact at order 2)
    ladder = TaylorLadder(2, formula="taylorseer")
    for s in [0, 1, 2]:
        ladder.update(torch.tensor(float(s * s)), s)
    assert [float(f) for f in ladder.factors] == [4.0, 3.0, 2.0]
    assert float(ladder.forecast(3)) == 8.0


@pytest.mark.parametrize("formula", ["newton", "taylorseer"])
def test_first_order_is_exact_on_lines_for_both_formulas(formula):
    ladder = TaylorLadder(1, formula=formula)
    ladder.update(torch.tensor(1.0), 2)
    ladder.update(torch.tensor(7.0), 5)
    assert float(ladder.forecast(9)) == pytest.approx(15.0)


def test_order_zero_is_plain_reuse_and_ladder_holds_order_plus_one_tensors():
    ladder = TaylorLadder(0)
    ladder.update(torch.ones(4), 0)
    ladder.update(torch.full((4,), 3.0), 1)
    assert torch.equal(ladder.forecast(10), torch.full((4,), 3.0))
    third = TaylorLadder(3)
    for s in range(6):
        third.update(torch.ones(8, dtype=torch.float32), s)
    assert len(third.factors) == 4 and third.nbytes == 4 * 8 * 4


def test_ladder_rejects_steps_that_do_not_increase_and_forecast_before_refresh():
    ladder = TaylorLadder(1)
    with pytest.raises(RuntimeError, match="no factors"):
        ladder.forecast(0)
    ladder.update(torch.zeros(2), 3)
    with pytest.raises(ValueError, match="steps must increase"):
        ladder.update(torch.zeros(2), 3)


def test_ladder_keeps_factors_in_requested_dtype():
    ladder = TaylorLadder(1, dtype=torch.float32)
    ladder.update(torch.ones(3, dtype=torch.bfloat16), 0)
    assert ladder.factors[0].dtype == torch.float32
