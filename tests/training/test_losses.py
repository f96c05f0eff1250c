"""Loss terms pinned against hand computations."""

import pytest
import torch

from atft.training.losses import day_stats, multi_horizon_loss, per_day_corr, pinball, standardise_per_day


def _two_days():
    y = torch.tensor([[1.0], [2.0], [3.0], [10.0], [20.0], [30.0], [99.0]])  # [B, H=1]
    mask = torch.tensor([[True]] * 6 + [[False]])  # the last sample has no target
    day = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    return y, mask, day


def test_standardise_per_day_uses_each_days_masked_samples():
    y, mask, day = _two_days()
    z = standardise_per_day(y, mask, day, 2)
    std = (2.0 / 3.0) ** 0.5  # population std of (1, 2, 3)
    expected = torch.tensor([-1 / std, 0.0, 1 / std, -1 / std, 0.0, 1 / std, 0.0])
    assert torch.allclose(z[:, 0], expected, atol=1e-5)
    count, mean, _ = day_stats(y, mask, day, 2)
    assert count[:, 0].tolist() == [3.0, 3.0] and mean[:, 0].tolist() == [2.0, 20.0]


def test_perfect_prediction_has_zero_loss_and_unit_correlation():
    y, mask, day = _two_days()
    z = standardise_per_day(y, mask, day, 2)
    terms = multi_horizon_loss(z, y, mask, day, corr_weight=0.5, variance_penalty_weight=1.0)
    assert float(terms["loss"]) < 1e-6
    corr, ok = per_day_corr(z, y, mask, day, 2)
    assert ok.all() and torch.allclose(corr, torch.ones_like(corr), atol=1e-5)


def test_variance_penalty_is_relu_frac_minus_std_squared():
    y, mask, day = _two_days()
    constant = torch.zeros_like(y)  # collapsed: per-day std 0 -> penalty frac^2 on every day
    terms = multi_horizon_loss(constant, y, mask, day, loss_type="mse", corr_weight=0.0,
                               variance_penalty_weight=1.0, variance_target_frac=0.5)
    assert abs(float(terms["variance"][0]) - 0.25) < 1e-6
    assert float(terms["pred_std"][0]) < 1.1e-10  # std floored at 1e-10 so its gradient stays finite
    # mse of 0 against z (unit variance per day over 6 valid samples) is 1; total = 1 + 0.25
    assert abs(float(terms["loss"]) - 1.25) < 1e-5
    wide = standardise_per_day(y, mask, day, 2) * 0.8  # spread 0.8 >= 0.5: no penalty
    assert float(multi_horizon_loss(wide, y, mask, day, variance_target_frac=0.5)["variance"][0]) == 0.0


def test_pinball_matches_formula():
    z = torch.tensor([[1.0]])
    pred_q = torch.tensor([[[0.0, 2.0]]])  # [B, H, Q]
    q = torch.tensor([0.1, 0.9])
    # q=0.1, err=1 -> 0.1; q=0.9, err=-1 -> (0.9-1)(-1) = 0.1; mean 0.1
    assert torch.allclose(pinball(pred_q, z, q), torch.tensor([[0.1]]))


def test_horizon_weights_normalised():
    y, mask, day = _two_days()
    y2, mask2 = torch.cat([y, y], 1), torch.cat([mask, mask], 1)
    pred = torch.zeros_like(y2)
    pred[:, 1] = standardise_per_day(y, mask, day, 2)[:, 0]  # horizon 2 perfect, horizon 1 not
    kw = dict(corr_weight=0.0, variance_penalty_weight=0.0, loss_type="mse")
    only_first = multi_horizon_loss(pred, y2, mask2, day, horizon_weights=torch.tensor([1.0, 0.0]), **kw)
    equal = multi_horizon_loss(pred, y2, mask2, day, **kw)
    assert abs(float(only_first["loss"]) - 1.0) < 1e-5 and abs(float(equal["loss"]) - 0.5) < 1e-5


def _ranked_day(seed=0, n=50, days=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n * days, 1, generator=g)
    day = torch.arange(days).repeat_interleave(n)
    return y, torch.ones_like(y, dtype=torch.bool), day


@pytest.mark.parametrize("loss_type", ["ic", "listnet", "pairwise", "huber", "mse"])
def test_every_loss_prefers_the_right_ranking(loss_type):
    y, mask, day = _ranked_day()
    z = standardise_per_day(y, mask, day, 3)
    kw = dict(loss_type=loss_type, corr_weight=0.0, variance_penalty_weight=0.0)
    torch.manual_seed(0)
    right = float(multi_horizon_loss(z, y, mask, day, **kw)["loss"])
    noise = float(multi_horizon_loss(torch.randn_like(z), y, mask, day, **kw)["loss"])
    wrong = float(multi_horizon_loss(-z, y, mask, day, **kw)["loss"])
    assert right < noise < wrong


def test_ic_loss_is_one_minus_the_per_day_correlation():
    y, mask, day = _ranked_day()
    pred = y + torch.randn_like(y)
    terms = multi_horizon_loss(pred, y, mask, day, loss_type="ic", corr_weight=0.0, variance_penalty_weight=0.0)
    corr, _ = per_day_corr(pred, standardise_per_day(y, mask, day, 3), mask, day, 3)
    assert abs(float(terms["loss"]) - float((1 - corr).mean())) < 1e-5


def test_listnet_is_zero_for_no_information_and_ranking_losses_ignore_masked_rows():
    y, mask, day = _ranked_day()
    flat = torch.zeros_like(y)
    terms = multi_horizon_loss(flat, y, mask, day, loss_type="listnet", corr_weight=0.0, variance_penalty_weight=0.0)
    assert abs(float(terms["loss"])) < 1e-5
    for loss_type in ("listnet", "pairwise", "ic"):
        pred = y.clone()
        garbage_mask = mask.clone()
        garbage_mask[::7] = False
        pred_changed = pred.clone()
        pred_changed[::7] = 1e3  # masked rows: any value, no effect
        kw = dict(loss_type=loss_type, corr_weight=0.0, variance_penalty_weight=0.0)
        torch.manual_seed(1)
        a = float(multi_horizon_loss(pred, y, garbage_mask, day, **kw)["loss"])
        torch.manual_seed(1)
        b = float(multi_horizon_loss(pred_changed, y, garbage_mask, day, **kw)["loss"])
        assert abs(a - b) < 1e-5, loss_type


@pytest.mark.parametrize("loss_type", ["ic", "listnet", "pairwise"])
def test_variance_penalty_and_finite_gradients_under_ranking_losses(loss_type):
    y, mask, day = _ranked_day()
    constant = torch.zeros_like(y, requires_grad=True)
    terms = multi_horizon_loss(constant, y, mask, day, loss_type=loss_type, variance_penalty_weight=1.0,
                               variance_target_frac=0.5)
    assert abs(float(terms["variance"][0]) - 0.25) < 1e-6  # a collapsed prediction pays frac^2
    terms["loss"].backward()
    assert torch.isfinite(constant.grad).all()


def test_unknown_loss_type_is_refused():
    y, mask, day = _ranked_day()
    with pytest.raises(ValueError, match="train.loss.type"):
        multi_horizon_loss(y, y, mask, day, loss_type="hinge")
