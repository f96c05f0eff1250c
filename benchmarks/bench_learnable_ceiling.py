"""How much of a planted market's oracle is reachable from ATFT's inputs: ridge ceilings on growing inputs.

    python benchmarks/bench_learnable_ceiling.py --work /tmp/large --seeds 0,1,2,3,4 \
        --out benchmarks/results/learnable_ceiling.md [override ...]

``--work`` is a folder of ``bench_learnable_large.py`` (its markets ``rich200x1400_s{seed}.parquet``, built by
``atft dataset build --source synthetic --seed SEED`` with the rich preset, and its compare folders
``cmp_s{seed}``). The hidden clusters, leaders and volume states are redrawn from each seed; they are not
in the dataset. On the
dataset's own split, a per-day-normalised ridge (the Ridge baseline's protocol: last-day scaled features,
per-day z-scored 1d target, alpha 1) is fitted on the training days with these inputs, each set adding to
the one before:

1. ``own``: the features the run uses (what the Ridge baseline and ATFT's linear path read);
2. ``+ peers``: the mean of the same features over the stock's day-graph neighbours (ATFT's peer path);
3. ``+ products``: every pairwise product of the own features (a quadratic model: the volume-conditional
   component is such a product);
4. ``+ true leaders``: the hidden-cluster leaders' mean log return of the last two days for followers
   (0 for leaders), which only the generator knows. No model sees these; the row measures how much of the
   oracle lies in knowing which stocks lead;
5. ``+ true volume state``: the volume state times the day's log return (the conditional component's
   exact form; the model sees the state only through noisy volume features);
6. ``+ known regime``: the same inputs fitted on the training days after the regime change only (the
   momentum component's loading changes there; only the generator knows the day).

The last row knows everything the oracle knows but the loadings, so it checks the method: what it misses
is estimation error.

It prints each row's test 1d RankIC (mean of daily Spearman correlations with the realised return) per
seed, with its share of the oracle's, and ATFT's, Ridge's and LightGBM's from the compare folders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from atft.config import load_config
from atft.data.panel import load_panel
from atft.data.sources.synthetic import _structure, market_params, volume_states
from atft.model import neighbour_mean
from atft.training.datamodule import build_graph_builder
from atft.training.targets import cross_sectional_targets

FEATURES = ["returns_1d", "returns_2d", "returns_5d", "returns_20d", "volume_zscore_20d", "volume_ratio_5d",
            "sector_rel_return_1d", "sector_return_5d"]  # the benchmark's eight (bench_learnable_large.py)


def peer_means(X: np.ndarray, builder) -> np.ndarray:
    """Mean of each stock's day-graph neighbours' features, per day: ``[D, N, F]`` (0 without neighbours),
    by the peer path's own ``neighbour_mean``."""
    out = np.zeros_like(X)
    for d in range(X.shape[0]):  # loop over days
        src, dst, _ = builder.day_edges(d)
        edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
        out[d] = neighbour_mean(torch.from_numpy(X[d]), edge_index).numpy()
    return out


def leader_means(log_returns: np.ndarray, structure: dict) -> np.ndarray:
    """Followers' hidden-cluster leader mean log return of days d and d-1, ``[D, N, 2]`` (leaders: 0)."""
    L = np.nan_to_num(log_returns) @ structure["leader_mean"]  # [D, K]
    own = L[:, structure["cluster"]] * (~structure["leader"])[None, :]  # [D, N]
    return np.stack([own, np.vstack([np.zeros((1, own.shape[1])), own[:-1]])], axis=-1)


def ceiling_table(panel, builder, structure: dict, states: np.ndarray, regime_day: int) -> list[tuple[str, float]]:
    X = np.nan_to_num(panel.X.astype(np.float64))  # [D, N, F]
    ok = panel.M & panel.Y_mask[..., 0]  # [D, N]
    z = cross_sectional_targets(panel.Y[..., :1], panel.Y_mask[..., :1], "zscore", 3.0)[..., 0]  # [D, N]
    F = X.shape[2]
    pairs = [(i, j) for i in range(F) for j in range(i, F)]
    products = np.stack([X[..., i] * X[..., j] for i, j in pairs], axis=-1)  # [D, N, F(F+1)/2]
    sets = {"own": [X]}
    sets["+ peers"] = [*sets["own"], peer_means(X, builder)]
    sets["+ products"] = [*sets["+ peers"], products]
    # raw log return of each day: the 1d target of the day before (panel.returns is the scaled feature)
    log_ret = np.log1p(np.vstack([np.zeros((1, X.shape[1])), np.nan_to_num(panel.Y[:-1, :, 0])]))  # [D, N]
    sets["+ true leaders"] = [*sets["+ products"], leader_means(log_ret, structure)]
    sets["+ true volume state"] = [*sets["+ true leaders"], (states * log_ret)[..., None]]
    sets["+ known regime"] = sets["+ true volume state"]
    rows = []
    for name, blocks in sets.items():
        inputs = np.concatenate(blocks, axis=-1)  # [D, N, P]
        tr = panel.splits.train
        if name == "+ known regime":
            tr = tr[tr >= regime_day]
        x, y = inputs[tr][ok[tr]], z[tr][ok[tr]]
        mx = x.mean(0)
        xc = x - mx
        w = np.linalg.solve(xc.T @ xc + np.eye(x.shape[1]), xc.T @ (y - y.mean()))
        daily = [spearmanr(inputs[d][ok[d]] @ w, panel.Y[d, ok[d], 0])[0] for d in panel.splits.test
                 if ok[d].sum() > 5]
        rows.append((name, float(np.mean(daily))))
    return rows


def seed_rows(data: Path, seed: int, compare: Path | None, overrides: list[str]) -> dict[str, float]:
    """``{row name: test 1d RankIC}`` of one market: the ridge ceilings, then the compare folder's models."""
    cfg = load_config([f"data.features.include=[{','.join(FEATURES)}]", *overrides])
    panel = load_panel(str(data), cfg.data, model_cfg=cfg.model)
    params = market_params({"preset": "rich"})
    structure = _structure(np.random.default_rng(seed), panel.shape[1], params)  # drawn first, as in generate
    seq = np.random.SeedSequence(seed)  # the generator's volume-state stream (synthetic.generate)
    states = volume_states(np.random.default_rng(seq.spawn(1)[0]), *panel.shape[:2], params["volume_state_share"])
    regime_day = int(params["regime_at"] * len(panel.dates))
    rows = {f"ridge {name}": ric for name, ric in
            ceiling_table(panel, build_graph_builder(panel, cfg.model), structure, states, regime_day)}
    if compare is not None:
        board = json.loads((compare / "leaderboard.json").read_text())
        rows.update({f"{m} (compare)": board["models"][m]["1d"]["rank_ic"]["mean"]
                     for m in ("atft", "ridge", "lightgbm", "oracle")})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="bench_learnable_large.py's folder: rich{S}x{D}_s{seed}.parquet"
                                                  " and cmp_s{seed}/")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--stocks", type=int, default=200)
    ap.add_argument("--days", type=int, default=1400)
    ap.add_argument("--out", default=None, help="also write the table here (markdown)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    work, seeds = Path(args.work), [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        compare = work / f"cmp_s{seed}"
        per_seed[seed] = seed_rows(work / f"rich{args.stocks}x{args.days}_s{seed}.parquet", seed,
                                   compare if (compare / "leaderboard.json").is_file() else None, args.overrides)
    names = list(per_seed[seeds[0]])
    oracle = "oracle (compare)" if all("oracle (compare)" in r for r in per_seed.values()) else None
    lines = ["# Ridge ceilings of the rich planted market (benchmarks/bench_learnable_ceiling.py)", "",
             f"{args.stocks} stocks x {args.days} days per data seed; test 1d RankIC; each ridge row adds inputs to "
             "the row above (the module docstring); the `(compare)` rows are `atft compare` on the same market "
             "(bench_learnable_large.py). Share of the oracle in brackets.", "",
             "| inputs | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: |"]
    for name in names:
        vals = [per_seed[s][name] for s in seeds]
        cells = [f"{v:.4f}" + (f" ({v / per_seed[s][oracle]:.0%})" if oracle else "") for s, v in zip(seeds, vals)]
        mean = float(np.mean(vals))
        share = f" ({mean / np.mean([per_seed[s][oracle] for s in seeds]):.0%})" if oracle else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.4f}{share} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
