"""How much of the day graph joins members of one hidden cluster of a planted market.

    python benchmarks/bench_graph_clusters.py --data rich200.parquet --seed 0 \
        --variant raw60=model.graph.residual=none,model.graph.window=60 --variant sector250=

The market must come from ``atft dataset build --source synthetic --seed SEED`` with the default (rich)
preset and stock count of the file: the hidden clusters are redrawn from that seed (they are not in the
dataset, which is the point). For each variant (``name=key=value,...``; ``name=`` for the defaults) it builds
the graphs of every 25th day from day 150 on and prints the share of edges whose two ends share a cluster
(chance: about 1 / number of clusters) and the share that share a sector.
"""

from __future__ import annotations

import argparse

import numpy as np

from atft.config import load_config
from atft.data.panel import load_panel
from atft.data.sources.synthetic import _structure, market_params
from atft.training.datamodule import build_graph_builder


def edge_shares(path: str, seed: int, overrides: list[str]) -> dict:
    cfg = load_config(overrides)
    panel = load_panel(path, cfg.data, model_cfg=cfg.model)
    cluster = _structure(np.random.default_rng(seed), panel.shape[1], market_params({"preset": "rich"}))["cluster"]
    builder = build_graph_builder(panel, cfg.model)
    same_cluster = same_sector = total = 0
    for d in range(150, panel.shape[0], 25):  # loop over sampled days
        src, dst, _ = builder.day_edges(d)
        same_cluster += int((cluster[src] == cluster[dst]).sum())
        same_sector += int(((panel.sector_id[d, src] == panel.sector_id[d, dst]) & (panel.sector_id[d, src] >= 0)).sum())
        total += len(src)
    return {"cluster": same_cluster / max(total, 1), "sector": same_sector / max(total, 1),
            "chance": 1.0 / (int(cluster.max()) + 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, required=True, help="the --seed the market was built with")
    ap.add_argument("--variant", action="append", default=None)
    args = ap.parse_args(argv)
    print("| variant | same hidden cluster | same sector | chance (cluster) |")
    print("| --- | ---: | ---: | ---: |")
    for text in args.variant or ["defaults="]:
        name, _, rest = text.partition("=")
        r = edge_shares(args.data, args.seed, [o for o in rest.split(",") if o])
        print(f"| {name} | {r['cluster']:.1%} | {r['sector']:.1%} | {r['chance']:.1%} |")


if __name__ == "__main__":
    main()
