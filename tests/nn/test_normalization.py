import math

import pytest
import torch

from atft.errors import InputError
from atft.nn.fan import FAN, top_k_frequency_component
from atft.nn.norm_base import LayerNormSlot, RevIN
from atft.nn.normalization import NORMS, build_adaptive_norm
from atft.nn.san import SAN

B, T, C = 3, 12, 4


def _x(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    trend = torch.linspace(0, 3, T)[None, :, None]
    return torch.randn(B, T, C, generator=g, dtype=torch.float64) + trend + 5.0  # non-stationary level


@pytest.mark.parametrize("name", sorted(NORMS))
def test_every_norm_keeps_shape_and_gives_finite_context(name):
    norm = build_adaptive_norm(name, C, T, {"fan_top_k": 2, "san_slice_len": 4}).double()
    y, context = norm(_x())
    assert y.shape == (B, T, C) and torch.isfinite(y).all()
    assert context is None or (context.shape == (B, C) and torch.isfinite(context).all())


@pytest.mark.parametrize("name", [n for n in sorted(NORMS) if NORMS[n](C, T, {}).invertible])
def test_invertible_norms_round_trip(name):
    norm = build_adaptive_norm(name, C, T, {"fan_top_k": 3, "san_slice_len": 5}).double()
    if isinstance(norm, RevIN):  # a non-trivial affine must round-trip too
        with torch.no_grad():
            norm.gamma.uniform_(0.5, 2.0)
            norm.beta.normal_()
    x = _x(1)
    y, stats = norm.normalize(x)
    torch.testing.assert_close(norm.inverse(y, stats), x, rtol=1e-9, atol=1e-9)


def test_invertible_set_is_the_expected_one():
    assert {n for n in NORMS if NORMS[n](C, T, {}).invertible} == {"fan", "san", "fan_san", "revin", "none"}


def test_unknown_norm_is_an_input_error():
    with pytest.raises(InputError, match="batchnorm"):
        build_adaptive_norm("batchnorm", C, T)


def test_layernorm_normalises_each_step_over_channels():
    y, context = LayerNormSlot(C).double()(_x())
    assert context is None
    torch.testing.assert_close(y.mean(-1), torch.zeros(B, T, dtype=torch.float64), atol=1e-9, rtol=0)


def test_fan_removes_exactly_the_dominant_sinusoids():
    t = torch.arange(T, dtype=torch.float64)
    # two sinusoids on rFFT bins 1 and 3 plus a small one on bin 5: top-2 removes the big two exactly
    big = 3.0 * torch.sin(2 * math.pi * t / T) + 2.0 * torch.cos(2 * math.pi * 3 * t / T)
    small = 0.1 * torch.cos(2 * math.pi * 5 * t / T)
    x = (big + small)[None, :, None].repeat(1, 1, 2)
    non_stationary = top_k_frequency_component(x, 2).double()
    torch.testing.assert_close(non_stationary, big[None, :, None].repeat(1, 1, 2), atol=1e-9, rtol=0)
    y, _ = FAN(2, T, top_k=2).double().normalize(x)
    torch.testing.assert_close(y, small[None, :, None].repeat(1, 1, 2), atol=1e-9, rtol=0)


def test_fan_with_all_frequencies_removes_everything():
    y, _ = FAN(C, T, top_k=T // 2 + 1).double().normalize(_x())
    torch.testing.assert_close(y, torch.zeros_like(y), atol=1e-9, rtol=0)


def test_fan_runs_under_bf16_autocast():
    norm = FAN(C, T, top_k=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, context = norm(_x().float())
    assert torch.isfinite(y.float()).all() and torch.isfinite(context.float()).all()


def test_san_slices_are_aligned_to_the_end_and_standardised():
    norm = SAN(C, T, slice_len=5).double()  # T=12 -> slices of 2, 5, 5 steps
    x = _x(2)
    y, (mu, sigma, slice_mu, slice_sigma) = norm.normalize(x)
    for lo, hi in [(0, 2), (2, 7), (7, 12)]:
        seg = x[:, lo:hi]
        torch.testing.assert_close(mu[:, lo:hi], seg.mean(1, keepdim=True).expand_as(seg))
        torch.testing.assert_close(sigma[:, lo:hi], seg.std(1, unbiased=False, keepdim=True).expand_as(seg))
        torch.testing.assert_close(y[:, lo:hi].mean(1), torch.zeros(B, C, dtype=torch.float64), atol=1e-9, rtol=0)
    assert slice_mu.shape == slice_sigma.shape == (B, 3, C)


def test_san_rejects_a_slice_longer_than_the_window():
    with pytest.raises(ValueError, match="san_slice_len"):
        SAN(C, T, slice_len=T + 1)


def test_revin_standardises_over_time():
    y, (mu, sigma) = RevIN(C).double().normalize(_x())
    torch.testing.assert_close(y.mean(1), torch.zeros(B, C, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.std(1, unbiased=False), torch.ones(B, C, dtype=torch.float64), atol=1e-5, rtol=0)


def test_instance_norms_feed_what_they_removed_forward():
    """Shifting the level (RevIN, SAN) or scaling the dominant sinusoid (FAN) leaves the normalised
    series unchanged; only ``context`` carries the difference to the head."""
    g = torch.Generator().manual_seed(3)
    noise = 0.1 * torch.randn(B, T, C, generator=g, dtype=torch.float64)
    wave = torch.sin(2 * math.pi * 2 * torch.arange(T, dtype=torch.float64) / T)[None, :, None]
    cases = [(RevIN(C), noise, noise + 3.0), (SAN(C, T, slice_len=4), noise, noise + 3.0),
             (FAN(C, T, top_k=1), noise + 2.0 * wave, noise + 5.0 * wave)]
    for norm, a, b in cases:
        norm = norm.double()
        (ya, ca), (yb, cb) = norm(a), norm(b)
        torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-9)
        assert not torch.allclose(ca, cb), type(norm).__name__
