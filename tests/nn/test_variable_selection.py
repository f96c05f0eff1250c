import pytest
import torch
import torch.nn.functional as F

from atft.nn.variable_selection import VariableSelectionNetwork


def loop_reference(vsn: VariableSelectionNetwork, x: torch.Tensor) -> torch.Tensor:
    """TFT's per-variable GRNs written the straightforward way: one small GRN per feature, in a loop."""
    outs = []
    for f in range(vsn.n_features):
        xi = x[..., f : f + 1] * vsn.embed_weight[f] + vsn.embed_bias[f]  # [B, T, d_e]
        eta2 = F.linear(xi, vsn.fc_in_weight[f].T, vsn.fc_in_bias[f])
        eta1 = F.linear(F.elu(eta2), vsn.fc_hidden_weight[f].T, vsn.fc_hidden_bias[f])
        gated = F.linear(eta1, vsn.glu_weight[f].T, vsn.glu_bias[f])
        value, gate = gated[..., : vsn.embed_dim], gated[..., vsn.embed_dim :]
        outs.append(F.layer_norm(xi + value * torch.sigmoid(gate), (vsn.embed_dim,)) + vsn.norm_bias[f])
    return torch.stack(outs, dim=2)  # [B, T, F, d_e]


def test_batched_embeddings_equal_per_feature_loop():
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(n_features=7, embed_dim=5, hidden_dim=16).double().eval()
    with torch.no_grad():  # move the LayerNorm shift off its zero init so it is exercised
        vsn.norm_bias.normal_()
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    selected, weights = vsn(x)
    reference = loop_reference(vsn, x)  # [B, T, F, d_e]
    expected = (weights.unsqueeze(-1) * reference).reshape(3, 4, 7 * 5)
    torch.testing.assert_close(selected, expected, rtol=1e-10, atol=1e-10)


def test_weights_are_a_distribution_over_features():
    torch.manual_seed(1)
    vsn = VariableSelectionNetwork(n_features=6, embed_dim=4, hidden_dim=8).eval()
    _, weights = vsn(torch.randn(2, 3, 6))
    assert weights.shape == (2, 3, 6)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))


def test_wrong_feature_count_is_rejected():
    vsn = VariableSelectionNetwork(n_features=6)
    with pytest.raises(ValueError, match=r"\[B, T, 6\]"):
        vsn(torch.randn(2, 3, 5))
