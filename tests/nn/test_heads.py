import torch

from atft.nn.heads import GatedFusion, MultiHorizonHead

C, H = 8, 3


def test_each_horizon_has_its_own_mlp():
    torch.manual_seed(0)
    head = MultiHorizonHead(C, H, n_outputs=1, head_hidden=4).eval()
    z = torch.randn(5, C)
    before = head(z)
    with torch.no_grad():
        head.w1[1].add_(1.0)  # change horizon 1's first layer only
    after = head(z)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_head_matches_a_per_horizon_reference():
    torch.manual_seed(1)
    head = MultiHorizonHead(C, H, n_outputs=2, head_hidden=4).eval()
    z = torch.randn(5, C)
    out = head(z)  # [B, H, Q]
    for h in range(H):
        raw = torch.nn.functional.elu(z @ head.w1[h] + head.b1[h]) @ head.w2[h] + head.b2[h]  # [B, Q]
        expected = torch.stack([raw[:, 0], raw[:, 0] + torch.nn.functional.softplus(raw[:, 1])], dim=-1)
        torch.testing.assert_close(out[:, h], expected)


def test_reset_parameters_changes_the_head():
    torch.manual_seed(2)
    head = MultiHorizonHead(C, H)
    w = head.w1.detach().clone()
    head.reset_parameters()
    assert not torch.allclose(head.w1, w)


def test_fusion_keeps_the_temporal_embedding_when_the_gate_is_shut():
    torch.manual_seed(3)
    fusion = GatedFusion(C, dropout=0.0).eval()
    with torch.no_grad():  # gate logits -> -inf: GLU output 0, the GRN reduces to LayerNorm(t)
        fusion.grn.gate_norm.glu.proj.bias[C:] = -1e4
    t, g = torch.randn(4, C), torch.randn(4, C)
    torch.testing.assert_close(fusion(t, g), torch.nn.functional.layer_norm(t, (C,)))
