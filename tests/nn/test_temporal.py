import pytest
import torch

from atft.nn.temporal import InterpretableMultiHeadAttention, TemporalEncoder

B, T, C = 3, 8, 16


def test_encoder_is_causal():
    torch.manual_seed(0)
    enc = TemporalEncoder(C, lstm_layers=2, heads=4, dropout=0.1).eval()
    x = torch.randn(B, T, C)
    seq, _ = enc.encode(x)
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(B, T - t - 1, C) * 10
        seq_changed, _ = enc.encode(changed)
        torch.testing.assert_close(seq_changed[:, : t + 1], seq[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(seq_changed[:, t + 1 :], seq[:, t + 1 :])


def test_forward_is_the_last_step_of_the_full_sequence():
    torch.manual_seed(1)
    enc = TemporalEncoder(C, heads=4).eval()
    x = torch.randn(B, T, C)
    key_mask = torch.rand(B, T) > 0.3
    for mask in (None, key_mask):
        seq, attn = enc.encode(x, mask)
        last, attn_last = enc(x, mask, return_attention=True)
        torch.testing.assert_close(last, seq[:, -1])
        torch.testing.assert_close(attn_last, attn[:, :, -1])
        torch.testing.assert_close(enc(x, mask), last)
    assert attn_last.shape == (B, 4, T)


def test_attention_rows_are_causal_distributions():
    torch.manual_seed(2)
    att = InterpretableMultiHeadAttention(C, heads=4).eval()
    _, weights = att(torch.randn(B, T, C))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 4, T))
    assert (weights.triu(diagonal=1) == 0).all()


def test_heads_share_the_value_projection():
    # TFT eq. 14-16: out = W_H (mean_h A_h) (x W_V) with one W_V of width C/heads for all heads
    att = InterpretableMultiHeadAttention(C, heads=4).eval()
    assert att.value.out_features == C // 4
    x = torch.randn(B, T, C)
    out, weights = att(x)
    expected = att.out(weights.mean(1) @ att.value(x))
    torch.testing.assert_close(out, expected)


def test_masked_keys_get_no_weight_but_each_step_sees_itself():
    torch.manual_seed(3)
    att = InterpretableMultiHeadAttention(C, heads=2).eval()
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[:, :3] = False  # first three steps are padding
    _, weights = att(torch.randn(B, T, C), key_mask)
    assert torch.isfinite(weights).all()
    assert (weights[:, :, 3:, :3] == 0).all()
    torch.testing.assert_close(weights[:, :, 0, 0], torch.ones(B, 2))


def test_hidden_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        InterpretableMultiHeadAttention(10, heads=4)
