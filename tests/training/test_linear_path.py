"""The linear path: ATFT with its deep branch off is the per-day-normalised Ridge; with it on, training
starts from that Ridge; selection keeps the starting model when no epoch beats it on validation."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.linear_model import Ridge
from synthetic_panel import write_dataset

from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule
from atft.training.module import ATFTLightningModule
from atft.training.targets import cross_sectional_targets
from atft.training.train import train, warm_start_linear_path


def _ridge_reference(cfg, panel):
    """sklearn's Ridge on the training rows: last-day features -> the per-day z-scored 1d target."""
    from atft.training.datamodule import PanelWindows

    ok = PanelWindows(panel, cfg.data.lookback, cfg.data.min_history_frac).sample_ok
    z = cross_sectional_targets(panel.Y, panel.Y_mask, "zscore", 3.0)
    days = panel.splits.train
    di, ni = np.nonzero(ok[days] & panel.Y_mask[days, :, 0])
    model = Ridge(alpha=1.0).fit(panel.X[days[di], ni], z[days[di], ni, 0])
    return model, ok


SCREEN = {"data.features.leakage_screen_max_abs_ic": 0.99}  # the planted feature is strong on purpose


def _corr_by_day(a, b, days):
    return [np.corrcoef(a[d][np.isfinite(a[d])], b[d][np.isfinite(a[d])])[0, 1] for d in days]


def test_deep_branch_off_predicts_like_a_per_day_normalised_ridge(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "lin.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=0.8)
    cfg = make_cfg(data_path=data, **SCREEN, **{"model.deep": False, "train.trainer.max_epochs": 2})
    result = train(cfg)
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    model, _ = _ridge_reference(cfg, panel)
    frame = pl.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    codes = frame["Code"].to_numpy().astype(str)
    rows = np.searchsorted(panel.dates, frame["Date"].to_numpy().astype("datetime64[D]"))
    cols = np.searchsorted(panel.codes, codes)
    ridge = model.predict(panel.X[rows, cols])
    ours = frame["pred_1d"].to_numpy()
    assert np.corrcoef(ours, ridge)[0, 1] > 0.99  # the same linear model, within training noise
    # and it learned the planted signal like Ridge did
    assert result["test"]["1d"]["rank_ic"] > 0.3


def test_training_starts_from_the_ridge_fit(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "lin.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=0.8)
    cfg = make_cfg(data_path=data, **SCREEN)
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    dm = PanelDataModule(cfg, panel)
    dm.setup("fit")
    warm_start_linear_path(module, dm)
    model, ok = _ridge_reference(cfg, panel)
    module.eval()
    days = panel.splits.test
    preds = np.full(panel.M.shape, np.nan)
    with torch.no_grad():
        for batch in dm.loader("test", False, 10_000, shard=False):
            batch = dm.complete_batch(batch)
            preds[batch["date_idx"], batch["stock_idx"]] = module(batch)["predictions"][:, 0].numpy()
    ridge = np.where(np.isfinite(preds), model.predict(panel.X.reshape(-1, panel.X.shape[2])).reshape(panel.M.shape),
                     np.nan)
    assert np.nanmean(_corr_by_day(preds, ridge, days)) > 0.95  # deep branch starts near 0 (deep_init_scale)


def test_peer_path_starts_from_the_joint_ridge_fit_on_own_and_neighbour_mean_features(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "lin.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=0.8)
    cfg = make_cfg(data_path=data, **SCREEN, **{"model.linear_path.peers": True, "model.linear_path.peer_margin_se": 0})
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    dm = PanelDataModule(cfg, panel)
    dm.setup("fit")
    warm_start_linear_path(module, dm)
    usable, rows, target = dm.usable("train"), [], []
    for d in panel.splits.train:  # the reference: sklearn on [own row, mean of the day-graph neighbours' rows]
        members = np.flatnonzero(usable[d])
        if len(members) == 0:
            continue
        src, dst = dm.graph_builder.graph(d, members)[0].numpy()
        x = panel.X[d, members].astype(np.float64)
        peer = np.zeros_like(x)
        for i in range(len(members)):
            nbrs = src[(dst == i) & (src != i)]
            peer[i] = x[nbrs].mean(0) if len(nbrs) else 0.0
        rows.append(np.concatenate([x, peer], 1))
        target.append(dm.windows.y_norm.numpy()[d, members, 0])
    ref = Ridge(alpha=1.0).fit(np.concatenate(rows), np.concatenate(target))
    F = len(panel.feature_names)
    own = module.model.linear_path.linear.weight.detach().numpy()[0]
    peers = module.model.peer_path.linear.weight.detach().numpy()[0]
    assert np.abs(ref.coef_[F:]).max() > 0.01  # the peer block is not trivially zero
    assert np.allclose(own, ref.coef_[:F], atol=1e-5) and np.allclose(peers, ref.coef_[F:], atol=1e-5)
    assert abs(float(module.model.linear_path.linear.bias[0]) - ref.intercept_) < 1e-5


def test_selection_keeps_the_initial_model_when_training_ruins_it(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "strong.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=3.0)
    cfg = make_cfg(data_path=data, **SCREEN, **{"train.optimizer.lr": 5.0, "train.optimizer.warmup_frac": 0.0,
                                      "train.trainer.gradient_clip_val": 0, "train.degeneracy.enabled": False,
                                      "train.trainer.max_epochs": 1})
    result = train(cfg)
    info = result["info"]
    assert info["selected"] == "initial model (before training)"
    assert info["initial_score"] > 0.5  # the ridge warm start already ranks the strong signal well
    assert result["val"]["1d"]["rank_ic"] == info["initial_score"]
    # best.ckpt holds the selected weights, so predict/evaluate use the same model
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    key = "model.linear_path.linear.weight"
    assert not torch.equal(state[key], last[key])
    # the initial candidate is the ridge start itself: the deep branch's output is muted
    assert not state["model.prediction_head.w2"].any() and not state["model.prediction_head.b2"].any()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["info"]
    assert saved["selected"].startswith("initial")
    peer = saved["peer_block"]  # the peer path's admission to the ridge start (default: on, gated by CV)
    assert set(peer) == {"diff", "se", "days", "kept"} and peer["kept"] == (peer["diff"] > 2 * peer["se"])


def test_early_stopping_stops_on_a_flat_validation_score(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "noise.parquet", n_stocks=20, n_days=80, horizons=(1,), signal=0.0)
    cfg = make_cfg(data_path=data, **{"train.trainer.max_epochs": 8, "train.early_stopping.patience": 1,
                                      "train.optimizer.lr": 0.0})  # lr 0: every epoch scores the same
    train(cfg)
    epochs = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 2  # epoch 1 sets the best, epoch 2 does not improve -> stop


def test_seed_ensemble_averages_members_and_reports_their_spread(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "ens.parquet", n_stocks=20, n_days=80, horizons=(1,), signal=0.8)
    # include_init off: members that both kept the (deterministic) ridge start would be equal
    cfg = make_cfg(data_path=data, **SCREEN, **{"train.ensemble.seeds": 2, "train.checkpoint.include_init": False})
    result = train(cfg)
    run = tmp_path / "run"
    members = [pl.read_parquet(run / f"seed{k}" / "predictions_test.parquet").sort("Date", "Code") for k in (0, 1)]
    ens = pl.read_parquet(run / "predictions_test.parquet").sort("Date", "Code")
    mean = (members[0]["pred_1d"].to_numpy() + members[1]["pred_1d"].to_numpy()) / 2
    assert np.allclose(ens["pred_1d"].to_numpy(), mean, atol=1e-6)
    assert not np.allclose(members[0]["pred_1d"].to_numpy(), members[1]["pred_1d"].to_numpy())
    spread = result["spread"]["1d"]
    ric = [m["test"]["1d"]["rank_ic"] for m in result["members"]]
    assert [m["seed"] for m in result["members"]] == [cfg.seed, cfg.seed + 1]
    assert abs(spread["rank_ic_std"] - np.std(ric, ddof=1)) < 1e-9
    assert (run / "config.yaml").is_file() and json.loads((run / "metrics.json").read_text())["test"]["1d"]


def test_margin_over_initial_is_the_paired_daily_difference_and_its_hac_se():
    from atft.evaluation.hac import hac_se
    from atft.training.train import margin_over_initial

    rng = np.random.default_rng(0)
    init, best = rng.normal(0.1, 0.05, 60), rng.normal(0.12, 0.05, 60)
    best[5] = np.nan  # a day only one model scores is left out
    diff, se = margin_over_initial(best, init, horizon=1)
    paired = np.delete(best - init, 5)
    assert diff == pytest.approx(paired.mean()) and se == pytest.approx(hac_se(paired, 1))


def test_selection_keeps_the_initial_model_unless_training_beats_it_by_the_margin(make_cfg, tmp_path):
    data = write_dataset(tmp_path / "sig.parquet", n_stocks=30, n_days=90, horizons=(1,), signal=0.8)
    # a zero-initialised linear path: the starting model is poor and training clearly improves on it
    base = {**SCREEN, "model.linear_path.init": "zero", "train.trainer.max_epochs": 2}
    cfg = make_cfg(data_path=data, **base, **{"train.checkpoint.init_margin_se": 0.0})
    info = train(cfg)["info"]
    assert info["selected"].startswith("epoch") and "margin" not in info
    assert info["best_score"] > info["initial_score"]
    cfg = make_cfg("run_margin", data_path=data, **base,
                   **{"train.checkpoint.init_margin_se": 1e6})  # no improvement can clear this margin
    result = train(cfg)
    info = result["info"]
    assert info["selected"] == "initial model (before training)"
    assert info["margin"]["diff"] > 0 and info["margin"]["se"] > 0  # the best epoch was better, within the margin
    assert result["val"]["1d"]["rank_ic"] == pytest.approx(info["initial_score"])


def test_ridge_rows_are_whole_days_with_the_peer_block_and_a_row_sample_without():
    from atft.training.linear_init import _sample

    rng = np.random.default_rng(0)
    ok = rng.random((50, 40)) < 0.9  # [D, N]
    Y_mask = np.ones((50, 40, 2), bool)
    Y_mask[:, :5, 1] = False  # horizon 2 misses five stocks
    days = np.arange(10, 50)
    whole = _sample(ok, Y_mask, days, np.random.default_rng(1), 500, whole_days=True)
    chosen = whole.any((1, 2))
    assert 0 < chosen.sum() < len(days)
    assert np.array_equal(whole[chosen], (ok[days][..., None] & Y_mask[days])[chosen])  # every row of a chosen day
    assert not whole[~chosen].any() and 500 - 40 < whole[..., 0].sum() <= 500
    rows = _sample(ok, Y_mask, days, np.random.default_rng(1), 500, whole_days=False)
    assert rows[..., 0].sum() == rows[..., 1].sum() == 500
    assert not (rows & ~(ok[days][..., None] & Y_mask[days])).any()
    assert rows.any((1, 2)).sum() > chosen.sum()  # spread over (nearly) all days


def _ring_market(peer_loading: float, seed: int = 0):
    """X [D, N, 3] noise; y = x_0 + peer_loading x mean of the two ring neighbours' x_1 + noise."""
    rng = np.random.default_rng(seed)
    D, N = 160, 50
    X = rng.standard_normal((D, N, 3)).astype(np.float32)
    neighbours = (np.roll(X[..., 1], 1, axis=1) + np.roll(X[..., 1], -1, axis=1)) / 2  # [D, N]
    y = X[..., 0] + peer_loading * neighbours + 3.0 * rng.standard_normal((D, N))
    members = np.arange(N)
    ring = torch.tensor(np.stack([np.r_[(members + 1) % N, (members - 1) % N], np.r_[members, members]]))
    return X, y[..., None].astype(np.float32), (lambda d: (members, ring))


@pytest.mark.parametrize("loading,kept", [(0.6, True), (0.0, False)])
def test_peer_block_enters_the_ridge_start_only_when_it_beats_own_features_out_of_fold(loading, kept):
    from atft.training.linear_init import ridge_fit

    X, y, peers = _ring_market(loading)
    ok, mask, days = np.ones(X.shape[:2], bool), np.ones(y.shape, bool), np.arange(X.shape[0])
    weight, bias, info = ridge_fit(X, ok, y, mask, days, peers=peers)
    assert info["kept"] is kept and info["days"] == len(days), info
    if kept:
        assert info["diff"] > 2 * info["se"] and weight[4, 0] > 0.3  # the neighbours' x_1
    else:
        own, own_bias, none = ridge_fit(X, ok, y, mask, days)  # the own-features ridge
        assert none == {} and np.array_equal(weight[3:], np.zeros((3, 1)))
        assert np.allclose(weight[:3], own) and np.allclose(bias, own_bias)
    always = ridge_fit(X, ok, y, mask, days, peers=peers, peer_margin_se=0)
    assert always[2] == {"kept": True} and np.abs(always[0][3:]).max() > 0
