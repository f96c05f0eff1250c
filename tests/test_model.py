import itertools

import pytest
import torch
from omegaconf import OmegaConf

from atft.config import load_config
from atft.errors import InputError
from atft.graph.day_graph import DayGraphBuilder
from atft.model import MODULE_NAMES, build_model, model_summary
from atft.nn.normalization import NORMS

B, T, F = 12, 10, 7
HORIZONS = [1, 5, 10, 20]
GRADIENT_MODULES = ["variable_selection", "backbone_projection", "adaptive_norm", "temporal_encoder", "gat",
                    "prediction_head"]


def _model_cfg(**overrides):
    cfg = load_config([f"data.lookback={T}"])
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    return cfg.model


def _batch(seed=0):
    """x [B, T, F] and a real day graph over the B stocks (kNN edges + self-loops)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, F, generator=g)
    returns = torch.randn(30, B, generator=g).numpy()
    builder = DayGraphBuilder(returns, torch.ones(30, B, dtype=torch.bool).numpy(),
                              sector_id=torch.arange(B) % 3, market_id=torch.arange(B) % 2, window=20, k=3)
    edge_index, edge_attr = builder.graph(29, torch.arange(B))
    return x, edge_index, edge_attr


@pytest.mark.parametrize(
    "norm,gat,quantiles",
    list(itertools.product(sorted(NORMS), [True, False], [None, [0.1, 0.5, 0.9]])),
)
def test_shapes_and_finite_outputs(norm, gat, quantiles):
    torch.manual_seed(0)
    model = build_model(_model_cfg(adaptive_norm=norm, **{"gat.enabled": gat}, quantiles=quantiles), F, HORIZONS)
    x, edge_index, edge_attr = _batch()
    out = model(x, edge_index, edge_attr)
    expected = {"predictions": (B, 4), "deep_predictions": (B, 4), "projected_features": (B, T, 64),
                "normalized_features": (B, T, 64),
                "feature_weights": (B, F), "temporal_embedding": (B, 64), "graph_embedding": (B, 64)}
    if quantiles:
        expected["quantiles"] = (B, 4, 3)
        torch.testing.assert_close(out["predictions"], out["quantiles"][..., 1])
        assert (out["quantiles"].diff(dim=-1) >= 0).all()
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["feature_weights"].sum(-1), torch.ones(B))
    if not gat:
        torch.testing.assert_close(out["graph_embedding"], out["temporal_embedding"])


def _backward(norm: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(_model_cfg(adaptive_norm=norm), F, HORIZONS)
    x, edge_index, edge_attr = _batch(seed)
    out = model(x, edge_index, edge_attr)
    out["projected_features"].retain_grad()
    out["normalized_features"].retain_grad()
    target = torch.randn(B, len(HORIZONS))
    torch.nn.functional.mse_loss(out["predictions"], target).backward()
    return model, out


def test_gradient_reaches_every_parameter_of_every_module():
    model, out = _backward("layernorm")
    for name in GRADIENT_MODULES:
        params = list(getattr(model, name).named_parameters())
        assert params, f"{name} has no parameters"
        for pname, p in params:
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            norm = p.grad.norm()
            assert torch.isfinite(norm) and norm > 0, f"{name}.{pname} gradient norm {norm}"
    for key in ("projected_features", "normalized_features"):
        grad = out[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.norm() > 0, key


def test_fan_san_gradient_at_projected_features_is_measured():
    """Documents (does not hide) how the legacy FAN->SAN stack scales the encoder gradient."""
    ratios = []
    for seed in range(3):
        _, default = _backward("layernorm", seed)
        _, legacy = _backward("fan_san", seed)
        g_default = default["projected_features"].grad.norm()
        g_legacy = legacy["projected_features"].grad.norm()
        assert torch.isfinite(g_legacy) and g_legacy > 0
        ratios.append((g_legacy / g_default).item())
    print("\n[ENCODER-GRAD] fan_san / layernorm grad-norm ratio at projected_features: "
          + ", ".join(f"{r:.3g}" for r in ratios))


def test_variable_selection_never_builds_a_b_t_f_c_tensor():
    torch.manual_seed(0)
    model = build_model(_model_cfg(), F, HORIZONS)
    x, edge_index, edge_attr = _batch()
    sizes = []

    def pack(t):
        if t.dim() >= 2:  # 1-D: the LSTM kernel's flat workspace, not an activation
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, edge_index, edge_attr)["predictions"].sum().backward()
    assert max(sizes) < B * T * F * model.hidden  # the largest saved activation is far below [B,T,F,C]
    assert max(sizes) >= B * T * F * 8  # ... and the [F, B*T, d_e] embeddings are there


def test_mask_hides_padded_steps():
    torch.manual_seed(0)
    model = build_model(_model_cfg(), F, HORIZONS).eval()
    x, edge_index, edge_attr = _batch()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, :4] = False
    noisy = x.clone()
    noisy[:, :4] = torch.randn(B, 4, F) * 100  # garbage in padded steps must not matter
    a = model(x, edge_index, edge_attr, mask)["predictions"]
    b = model(noisy, edge_index, edge_attr, mask)["predictions"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="mask"):
        model(x, mask=torch.ones(B, dtype=torch.bool))


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    for norm in ("layernorm", "fan_san"):
        model = build_model(_model_cfg(adaptive_norm=norm), F, HORIZONS)
        x, edge_index, edge_attr = _batch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, edge_index, edge_attr)
        out["predictions"].float().sum().backward()
        assert torch.isfinite(out["predictions"].float()).all()


def test_horizons_argument_and_bad_config():
    model = build_model(_model_cfg(horizons=[1, 2]), F, [1, 5, 10])
    assert model.horizons == [1, 5, 10]
    with pytest.raises(InputError, match="adaptive_norm"):
        build_model(_model_cfg(adaptive_norm="batchnorm"), F, HORIZONS)
    with pytest.raises(InputError, match="quantiles"):
        build_model(_model_cfg(quantiles=[0.5, 1.5]), F, HORIZONS)


def test_model_summary_lists_every_module_and_the_total():
    cfg = load_config([])
    text = model_summary(cfg, n_features=80)
    model = build_model(cfg.model, 80, [1, 5, 10, 20])
    for name in MODULE_NAMES:
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        assert f"{sum(p.numel() for p in getattr(model, name).parameters()):,}" in line
    assert f"{sum(p.numel() for p in model.parameters()):,}" in text.splitlines()[-1]


def test_peer_path_is_a_linear_map_of_the_neighbours_mean_last_day_features():
    from atft.model import PeerPath

    path = PeerPath(n_features=3, n_horizons=2)
    with torch.no_grad():
        path.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    x = torch.zeros(4, 5, 3)  # [B, T, F]
    x[:, -1] = torch.tensor([[1.0, 1.0, 9.0], [3.0, 5.0, 9.0], [5.0, 0.0, 9.0], [7.0, 7.0, 9.0]])
    x[:, 0] = 100.0  # only the last day enters
    # stock 0 hears 1 and 2 (and itself, ignored); stock 3 hears nobody but itself
    edge_index = torch.tensor([[1, 2, 0, 3], [0, 0, 0, 3]])
    out = path(x, edge_index)  # [B, H]
    assert torch.allclose(out[0], torch.tensor([4.0, 5.0]))  # mean of rows 1, 2: (4, 2.5) -> (4, 2 * 2.5)
    assert torch.equal(out[1:], torch.zeros(3, 2))  # no neighbours: 0 (the bias is 0)
    assert torch.equal(path(x, None), torch.zeros(4, 2))


def test_the_linear_paths_switch_on_from_config():
    cfg = OmegaConf.create({"hidden_size": 16, "vsn_embed_dim": 4, "lookback": 5,
                            "linear_path": {"enabled": True, "peers": True}, "deep": False})
    model = build_model(cfg, n_features=3, horizons=[1])
    x = torch.randn(4, 5, 3)
    out = model(x, torch.tensor([[1, 0], [0, 1]]))
    assert set(out) == {"predictions", "feature_weights"}  # the deep branch is off
    out["predictions"].sum().backward()
    assert model.peer_path.linear.weight.grad is not None and model.linear_path.linear.weight.grad is not None


def _fit(path, x, y, steps=400, lr=0.03):
    """Least squares of ``path(x)`` on ``y`` by Adam; the share of y's variance it explains."""
    opt = torch.optim.Adam(path.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((path(x)[:, 0] - y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return 1.0 - float(((path(x)[:, 0] - y) ** 2).mean() / y.var())


def test_interaction_path_learns_a_volume_signed_return_that_no_linear_map_can():
    from atft.model import InteractionPath, LinearPath

    g = torch.Generator().manual_seed(3)
    n = 4000
    x = torch.randn(n, 2, 4, generator=g)  # [B, T, F]; only the last day enters
    state = torch.randint(-1, 2, (n,), generator=g).float()  # a volume state -1 / 0 / +1
    x[:, -1, 0] = 1.5 * state + 0.3 * torch.randn(n, generator=g)  # a noisy volume feature shows it
    y = state * x[:, -1, 1]  # continuation after a spike, reversal after a drought (mean 0, no linear part)
    torch.manual_seed(0)
    explained = _fit(InteractionPath(4, 1, rank=8), x, y)
    linear = _fit(LinearPath(4, 1), x, y)
    assert explained > 0.8 and linear < 0.02, (explained, linear)


def test_interaction_path_starts_silent_and_is_off_with_the_deep_branch():
    cfg = OmegaConf.create({"hidden_size": 16, "vsn_embed_dim": 4, "lookback": 5,
                            "linear_path": {"enabled": True}, "interaction_path": {"enabled": True, "rank": 4}})
    model = build_model(cfg, n_features=3, horizons=[1, 5]).eval()
    x = torch.randn(6, 5, 3)
    assert torch.equal(model.interaction_path(x), torch.zeros(6, 2))  # zero output layer at the start
    with torch.no_grad():
        model.interaction_path.out.weight.fill_(1.0)
        on = model(x)
        model.deep = False
        off = model(x)["predictions"]
    linear = model.linear_path(x)
    assert torch.allclose(on["predictions"], on["deep_predictions"] + linear + model.interaction_path(x), atol=1e-6)
    assert not torch.allclose(model.interaction_path(x), torch.zeros(6, 2))
    assert torch.equal(off, linear)  # deep=false is the linear model alone


def _saved_bytes(model, x, edge_index, edge_attr) -> tuple[int, dict]:
    """Bytes autograd saves for the backward of one forward pass, and the outputs and parameter gradients."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, edge_index, edge_attr)
    out["predictions"].square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return saved, {"out": {k: v.detach() for k, v in out.items()}, "grads": grads}


@pytest.mark.parametrize("norm", ["layernorm", "fan_san"])
def test_checkpointed_encoder_gives_the_same_values_and_gradients_and_saves_far_less(norm):
    torch.manual_seed(0)
    model = build_model(_model_cfg(adaptive_norm=norm), F, HORIZONS).eval()  # eval: no dropout draws
    x, edge_index, edge_attr = _batch()
    plain_bytes, plain = _saved_bytes(model, x, edge_index, edge_attr)
    model.checkpoint_samples = 4  # B = 12: three chunks
    chunked_bytes, chunked = _saved_bytes(model, x, edge_index, edge_attr)
    for key, value in plain["out"].items():
        torch.testing.assert_close(chunked["out"][key], value, atol=1e-6, rtol=1e-5)
    assert plain["grads"].keys() == chunked["grads"].keys()
    for key, grad in plain["grads"].items():
        torch.testing.assert_close(chunked["grads"][key], grad, atol=1e-6, rtol=1e-4)
    assert chunked_bytes < 0.25 * plain_bytes, (chunked_bytes, plain_bytes)


def test_auto_checkpointing_turns_on_for_large_cpu_batches_only(monkeypatch):
    import atft.model as model_mod

    torch.manual_seed(0)
    model = build_model(_model_cfg(), F, HORIZONS).eval()  # the config's default: auto
    x, edge_index, edge_attr = _batch()
    assert model.checkpoint_samples == -1 and model._checkpoint_chunk(x) == 0  # a 12-sample batch: off
    plain_bytes, plain = _saved_bytes(model, x, edge_index, edge_attr)
    embed_bytes = x.numel() * model.variable_selection.embed_dim * 4  # [F, B*T, d_e] float32
    monkeypatch.setattr(model_mod, "AUTO_CHECKPOINT_BYTES", embed_bytes)
    monkeypatch.setattr(model_mod, "AUTO_CHECKPOINT_SAMPLES", 4)
    assert model._checkpoint_chunk(x) == 4 and model._checkpoint_chunk(x[:11]) == 0  # at the threshold: on
    auto_bytes, auto = _saved_bytes(model, x, edge_index, edge_attr)
    torch.testing.assert_close(auto["out"]["predictions"], plain["out"]["predictions"], atol=1e-6, rtol=1e-5)
    assert auto_bytes < 0.25 * plain_bytes, (auto_bytes, plain_bytes)
    for bad in ("sometimes", -3):
        with pytest.raises(InputError, match="checkpoint_samples"):
            build_model(_model_cfg(checkpoint_samples=bad), F, HORIZONS)


def test_feature_dropout_hides_whole_variables_of_the_deep_branch_while_training_only():
    model = build_model(_model_cfg(feature_dropout=0.4, hidden_size=16), F, [1])
    x = torch.randn(400, T, F) + 3.0  # no exact zeros in the input
    torch.manual_seed(0)
    dropped = model._drop_features(x)
    hidden = dropped == 0  # [B, T, F]
    assert torch.equal(hidden.all(dim=1), hidden.any(dim=1))  # a variable is hidden over its whole window
    share = float(hidden[:, 0].float().mean())
    assert 0.35 < share < 0.45, share  # 400 x F draws at p = 0.4
    assert torch.equal(dropped[~hidden], x[~hidden])  # kept variables are unscaled
    assert not torch.equal(hidden[0, 0], hidden[1, 0]) or not torch.equal(hidden[2, 0], hidden[3, 0])  # per sample
    model.eval()
    assert model._drop_features(x) is x
    with pytest.raises(InputError, match="feature_dropout"):
        build_model(_model_cfg(feature_dropout=1.0), F, [1])


def test_model_vsn_fused_switch_changes_the_path_not_the_function():
    """``model.vsn_fused`` reaches the variable selection; both settings give the same predictions and
    gradients (the fused kernels are the same function, ``tests/nn/test_fused_embed.py``)."""
    x, edge_index, edge_attr = _batch()
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = build_model(_model_cfg(vsn_fused=fused), F, HORIZONS).eval()
        assert model.variable_selection.fused is fused
        out = model(x, edge_index, edge_attr)
        out["predictions"].square().sum().backward()
        results.append((out["predictions"].detach(), {n: p.grad for n, p in model.named_parameters()}))
    (pred_fused, grads_fused), (pred_ops, grads_ops) = results
    torch.testing.assert_close(pred_fused, pred_ops, rtol=1e-5, atol=1e-6)
    for name, grad in grads_ops.items():
        if grad is not None:
            torch.testing.assert_close(grads_fused[name], grad, rtol=1e-4, atol=1e-5, msg=name)
