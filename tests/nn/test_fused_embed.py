"""The fused variable-selection embeddings against the tensor-ops path they stand in for."""

import numpy as np
import pytest
import torch

from atft.nn import fused_embed
from atft.nn.fused_embed import BLOCK, FusedEmbedding, fused_applies
from atft.nn.variable_selection import VariableSelectionNetwork


def _vsn(n_features: int, embed_dim: int, seed: int = 0) -> VariableSelectionNetwork:
    torch.manual_seed(seed)
    vsn = VariableSelectionNetwork(n_features, embed_dim, hidden_dim=16)
    with torch.no_grad():  # away from the zero init, so the shift's gradient path is exercised
        vsn.norm_bias.normal_()
    return vsn


def _run(vsn: VariableSelectionNetwork, x: torch.Tensor, upstream: torch.Tensor, fused: bool):
    """Output, d/dx and every parameter's gradient of ``sum(upstream * selected)``."""
    vsn.fused = fused
    vsn.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    selected, weights = vsn(x)
    (selected * upstream).sum().backward()
    return selected.detach(), weights.detach(), x.grad, {n: p.grad.clone() for n, p in vsn.named_parameters()}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 2e-5) -> None:
    """Equal up to float32 rounding, relative to the tensor's scale."""
    torch.testing.assert_close(a, b, rtol=0, atol=rel * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (9, 30, 13, 8), (2, 3 * BLOCK + 17, 5, 3)])
@pytest.mark.parametrize("threads", [1, 3])
def test_outputs_and_gradients_match_the_ops_path(shape, threads):
    """Every gradient (input, the folded GRN weights' parameters, the shift) and the output agree with the
    tensor ops, on row counts below, across and not a multiple of the block, and split over threads."""
    b, t, n, d = shape
    vsn = _vsn(n, d)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(b, t, n, generator=gen)
    upstream = torch.randn(b, t, n * d, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused, ops = _run(vsn, x, upstream, True), _run(vsn, x, upstream, False)
    finally:
        torch.set_num_threads(before)
    assert fused_applies(x, vsn.embed_weight)
    _close(fused[0], ops[0])
    torch.testing.assert_close(fused[1], ops[1])
    _close(fused[2], ops[2])
    assert set(fused[3]) == set(ops[3])
    for name in ops[3]:
        _close(fused[3][name], ops[3][name], rel=5e-5)


def test_the_function_keeps_only_its_inputs_for_backward():
    """Nothing of size ``[F, B*T, d_e]`` is saved: the backward pass recomputes from ``x``."""
    vsn = _vsn(6, 8)
    x = torch.randn(4, 10, 6)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        vsn(x)
    assert max(saved) <= x.numel() * 16  # the selection GRN's [B*T, hidden] activations are the largest
    vsn.fused = False
    ops = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: ops.append(t.numel()) or t, lambda t: t):
        vsn(x)
    assert max(ops) >= x.numel() * 8  # the ops path keeps [F, B*T, d_e] tensors


def test_results_do_not_depend_on_timing_across_threads():
    vsn = _vsn(11, 8)
    x = torch.randn(7, 64, 11)
    upstream = torch.randn(7, 64, 88)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = _run(vsn, x, upstream, True), _run(vsn, x, upstream, True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    assert all(torch.equal(first[3][n], second[3][n]) for n in first[3])


def test_nan_inputs_stay_nan():
    vsn = _vsn(4, 8)
    x = torch.randn(2, 3, 4)
    x[1, 2, 3] = float("nan")
    selected, _ = vsn(x)
    out = selected.reshape(2, 3, 4, 8)
    assert torch.isnan(out[1, 2]).any()          # the row's softmax weights are all NaN
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1, :2]).all()


def test_exponential_is_within_a_few_ulp():
    x = np.linspace(-87.0, 88.0, 200_001, dtype=np.float32)
    out = np.empty_like(x)
    fused_embed._exp(x, out, np.empty(len(x), np.int32))
    reference = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - reference) / reference) < 4 * np.finfo(np.float32).eps
    big = np.array([-1e4, 1e4, np.nan], dtype=np.float32)
    fused_embed._exp(big, out[:3], np.empty(3, np.int32))
    assert out[0] < 1e-37 and out[1] > 1e38 and np.isnan(out[2])


def test_other_dtypes_devices_and_autocast_take_the_ops_path(monkeypatch):
    calls, original = [], FusedEmbedding.apply
    monkeypatch.setattr(FusedEmbedding, "apply", lambda *a: calls.append(1) or original(*a))
    vsn = _vsn(5, 4)
    x = torch.randn(2, 3, 5)
    vsn.double()(x.double())
    vsn.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vsn(x)
    vsn.fused = False
    vsn(x)
    assert calls == []
    assert not fused_applies(x.double()) and fused_applies(x)
    vsn.fused = True
    vsn(x)
    assert calls == [1]
