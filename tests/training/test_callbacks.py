"""Degeneracy guard and gradient monitor, read back through the seed's grep commands."""

import json
import logging
import re
import subprocess

import lightning.pytorch as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from atft.data.panel import load_panel
from atft.training.datamodule import PanelDataModule
from atft.training.degeneracy import DegeneracyGuard, reset_head
from atft.training.grad_monitor import MONITORED, GradientMonitor
from atft.training.module import ATFTLightningModule
from atft.training.train import train


class ZeroHead(pl.Callback):
    """Collapses the prediction head (all weights 0 -> every prediction equals 0) before training."""

    def on_train_start(self, trainer, pl_module):
        with torch.no_grad():
            for p in pl_module.model.prediction_head.parameters():
                p.zero_()


def _fit(cfg, callbacks, epochs=1, prepare=None):
    panel = load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model)
    module = ATFTLightningModule(cfg, len(panel.feature_names), panel.horizons)
    if prepare is not None:
        prepare(module)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(module, datamodule=PanelDataModule(cfg, panel))
    return module, trainer


def _grep_count(pattern: str, lines: list[str]) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


def test_guard_resets_a_zeroed_head_and_variance_is_restored(make_cfg, caplog):
    cfg = make_cfg(**{"train.loss.variance_penalty_weight": 0.0})  # only the guard can fix the collapse
    guard = DegeneracyGuard.from_config(cfg)
    with caplog.at_level(logging.INFO, logger="atft.training"):
        module, _ = _fit(cfg, [ZeroHead(), guard])
    lines = caplog.messages
    assert _grep_count("DEGENERACY-GUARD.*reset applied", lines) == 1
    assert _grep_count(r"DEGENERACY-GUARD\] variance restored", lines) == 1
    first = re.search(r"reset applied \(horizon=1d, pred_std=([0-9.e+-]+), scale=0\.05", "\n".join(lines))
    assert first and float(first.group(1)) < cfg.train.degeneracy.pred_std_floor
    assert guard.total_resets == 1 and float(module.last_terms["pred_std"].min()) > cfg.train.degeneracy.pred_std_floor


def test_guard_escalates_and_stops_after_max_failures(make_cfg, caplog):
    # a floor no prediction spread can reach: every reset fails
    cfg = make_cfg(**{"train.degeneracy.pred_std_floor": 1e6, "train.degeneracy.max_failures": 2,
                      "train.degeneracy.recovery_batches": 1, "train.trainer.max_epochs": 3})
    guard = DegeneracyGuard.from_config(cfg)
    with caplog.at_level(logging.INFO, logger="atft.training"):
        module, trainer = _fit(cfg, [guard], epochs=3)
    lines = caplog.messages
    assert _grep_count("DEGENERACY-GUARD.*Reset failed to restore variance", lines) == 1
    assert re.search(r"escalating scale 0\.05 -> 0\.1", "\n".join(lines))
    assert guard.stopped_message and "stopping training" in guard.stopped_message
    assert trainer.global_step == 3  # reset after step 1, failed at 2, stopped at 3 (of 3 x 17)
    assert guard.total_resets == 2  # initial reset + one escalated reset


class CollapsedTemporalEmbedding(pl.Callback):
    """Forces a collapse upstream of the head: a forward hook makes the temporal embedding the same vector
    for every stock of the batch (one or more whole days), so it is constant within each day."""

    def on_train_start(self, trainer, pl_module):
        pl_module.model.temporal_encoder.register_forward_hook(
            lambda module, args, out: out.mean(0, keepdim=True).expand_as(out))


COLLAPSE = {"model.dropout": 0.3, "model.gat.dropout": 0.3, "train.loss.variance_penalty_weight": 0.0,
            "train.degeneracy.check_every": 4, "train.degeneracy.max_failures": 3,
            "train.degeneracy.recovery_batches": 1}


def test_guard_fires_on_a_collapse_upstream_of_the_head_and_escalates(make_cfg, caplog):
    cfg = make_cfg(**COLLAPSE)
    guard = DegeneracyGuard.from_config(cfg)
    with caplog.at_level(logging.INFO, logger="atft.training"):
        _, trainer = _fit(cfg, [CollapsedTemporalEmbedding(), guard])
    lines = [m for m in caplog.messages if "DEGENERACY-GUARD" in m]
    resets = [m for m in lines if re.search("DEGENERACY-GUARD.*reset applied", m)]
    steps = [int(re.search(r"step=(\d+)", m).group(1)) for m in resets]
    assert resets and steps[0] < cfg.train.degeneracy.check_every  # fired within check_every batches
    # the head reset cannot repair an upstream collapse: the reset climbs to the fusion, then the encoder
    assert resets[0].endswith("modules=prediction_head)")
    assert resets[1].endswith("modules=prediction_head+fusion)")
    assert resets[2].endswith("modules=prediction_head+fusion+temporal_encoder.output_gate+"
                              "temporal_encoder.feed_forward)")
    assert _grep_count("DEGENERACY-GUARD.*reset applied", lines) == guard.total_resets == 3
    assert guard.stopped_message and trainer.should_stop  # a hook no reset can undo: training stops


def test_train_mode_spread_hides_the_upstream_collapse(make_cfg):
    """Why the check runs in eval mode: with dropout 0.3 the training step's per-day prediction std (what
    the guard used to read) stays far above the floor while the eval-mode predictions are constant."""
    cfg = make_cfg(**COLLAPSE, **{"train.degeneracy.enabled": False})
    module, _ = _fit(cfg, [CollapsedTemporalEmbedding()])
    floor = cfg.train.degeneracy.pred_std_floor
    assert float(module.last_terms["pred_std"].min()) > 1e3 * floor  # the old train-mode check: healthy
    loader = PanelDataModule(cfg, load_panel(cfg.data.path, cfg.data, model_cfg=cfg.model))
    loader.setup("fit")
    batch = next(iter(loader.train_dataloader()))
    module.model.temporal_encoder.register_forward_hook(
        lambda m, args, out: out.mean(0, keepdim=True).expand_as(out))
    assert float(module.eval_prediction_terms(batch)["pred_std"].max()) < floor  # what the model predicts
    assert module.training  # modes restored


def test_eval_mode_checks_do_not_change_a_healthy_run(make_cfg):
    """A check is a no-grad eval-mode forward: it draws no random numbers and changes no weight."""
    cfg = make_cfg(**{"train.degeneracy.check_every": 1})
    pl.seed_everything(0, verbose=False)
    watched, _ = _fit(cfg, [DegeneracyGuard.from_config(cfg)])
    pl.seed_everything(0, verbose=False)
    alone, _ = _fit(cfg, [])
    for (name, a), (_, b) in zip(watched.state_dict().items(), alone.state_dict().items()):
        assert torch.equal(a, b), name


def test_reset_noise_is_relative_to_each_parameter_std():
    head = torch.nn.Linear(400, 300)
    torch.nn.init.normal_(head.weight, std=2.0)
    torch.nn.init.zeros_(head.bias)
    before = head.weight.detach().clone()
    reset_head(head, 0.05, torch.Generator().manual_seed(0))
    assert abs(float((head.weight - before).detach().std()) - 0.05 * 2.0) < 0.005
    # zero bias: std ~ 0 -> scale / sqrt(fan_in) with fan_in = 300 (the vector's size)
    assert abs(float(head.bias.std()) - 0.05 / 300**0.5) < 0.001


def test_healthy_run_logs_no_reset(make_cfg, tmp_path):
    train(make_cfg("healthy", **{"train.trainer.max_epochs": 2}))
    log = (tmp_path / "_logs" / "healthy.log").read_text().splitlines()
    assert _grep_count("DEGENERACY-GUARD.*reset applied", log) == 0
    assert _grep_count(r"\| resets 0 \|", log) == 2


def test_monitor_lines_parse_with_the_seed_greps(make_cfg, tmp_path):
    environ = {"ENABLE_GRAD_MONITOR": "1", "GRAD_MONITOR_EVERY": "4", "ENABLE_ENCODER_GRAD_HOOKS": "1"}
    train(make_cfg("mon", environ=environ))
    log_path = tmp_path / "_logs" / "mon.log"
    grep = subprocess.run(["grep", "GRAD-MONITOR", str(log_path)], capture_output=True, text=True).stdout
    steps = {}
    for m in re.finditer(r"\[GRAD-MONITOR\] step=(\d+) (\w+): norm=([0-9.]+e[+-]\d+)", grep):
        steps.setdefault(int(m.group(1)), {})[m.group(2)] = float(m.group(3))
    assert sorted(steps) == list(range(0, max(steps) + 1, 4)) and len(steps) >= 3  # first step, then every 4
    assert all(set(norms) == set(MONITORED) and all(v > 0 for v in norms.values()) for norms in steps.values())
    enc = subprocess.run(["grep", "ENCODER-GRAD", str(log_path)], capture_output=True, text=True).stdout
    enc_lines = [line for line in enc.splitlines() if re.search(
        r"\[ENCODER-GRAD\] step=\d+ projected_features: grad_norm=[0-9.e+-]+ normalized_features: grad_norm=", line)]
    assert len(enc_lines) == len(steps)  # at every monitor interval, not once per process
    assert "summary backbone_projection" in grep and "no reference range" in grep  # epoch-end classification
    records = [json.loads(line) for line in (tmp_path / "mon" / "grad_norms.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == sorted(steps)
    events = EventAccumulator(str(tmp_path / "mon" / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {f"grad_norm/{name}" for name in MONITORED} <= set(tags) and "val/rank_ic" in tags


def test_frozen_module_produces_the_vanishing_gradient_warning(make_cfg, caplog):
    cfg = make_cfg()

    def freeze(module):
        for p in module.model.backbone_projection.parameters():
            p.requires_grad_(False)

    with caplog.at_level(logging.INFO, logger="atft.training"):
        _fit(cfg, [GradientMonitor(every=5, warn_norm=1e-7)], prepare=freeze)
    warnings = [m for m in caplog.messages if "[GRAD-MONITOR] backbone_projection: norm" in m]
    assert warnings and warnings[0] == "[GRAD-MONITOR] backbone_projection: norm 0.00e+00 < 1e-07"
    assert not [m for m in caplog.messages if "[GRAD-MONITOR] temporal_encoder: norm " in m]  # healthy: no warning


def test_check_subsample_keeps_every_kth_sample_and_the_edges_among_them():
    from atft.training.degeneracy import check_subsample

    B = 10
    batch = {"x": torch.arange(B * 2.0).view(B, 2), "y": torch.arange(B * 1.0).view(B, 1),
             "day": torch.tensor([0] * 5 + [1] * 5), "edge_index": torch.tensor([[0, 3, 3, 1, 9, 6], [3, 0, 6, 2, 9, 9]]),
             "edge_attr": torch.arange(6.0).view(6, 1)}
    assert check_subsample(batch, None) is batch and check_subsample(batch, 10) is batch
    out = check_subsample(batch, 4)  # every 3rd sample: 0, 3, 6, 9
    assert out["y"].flatten().tolist() == [0, 3, 6, 9] and out["day"].tolist() == [0, 0, 1, 1]
    assert out["x"].tolist() == batch["x"][[0, 3, 6, 9]].tolist()
    # 0-3, 3-0, 3-6, 9-9 (self-loop), 6-9 kept and re-indexed; 1-2 (both dropped) gone
    assert out["edge_index"].tolist() == [[0, 1, 1, 3, 2], [1, 0, 2, 3, 3]]
    assert out["edge_attr"].flatten().tolist() == [0, 1, 2, 4, 5]


def test_guard_checks_a_subsample_and_still_repairs_a_zeroed_head(make_cfg, caplog):
    cfg = make_cfg(**{"train.loss.variance_penalty_weight": 0.0, "train.degeneracy.check_samples": 16})
    guard = DegeneracyGuard.from_config(cfg)
    sizes = []

    def spy(module):
        original = module.eval_prediction_terms

        def terms(batch):
            sizes.append((int(batch["y"].shape[0]), int(batch["edge_index"].max()) if batch["edge_index"].numel() else -1))
            return original(batch)
        module.eval_prediction_terms = terms

    with caplog.at_level(logging.INFO, logger="atft.training"):
        _fit(cfg, [ZeroHead(), guard], prepare=spy)
    assert sizes and all(b <= 16 and top < b for b, top in sizes)  # subsampled, edges inside the subsample
    assert _grep_count("DEGENERACY-GUARD.*reset applied", caplog.messages) == 1
    assert _grep_count(r"DEGENERACY-GUARD\] variance restored", caplog.messages) == 1
