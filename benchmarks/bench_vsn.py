"""Variable selection alone: our batched VSN (+ the one projection to C) vs pytorch-forecasting's.

The peer runs F per-variable GRNs of width C in a Python loop and stacks them into ``[B, T, C, F]``
(DESIGN.md: 90-97% of a TFT step). Ours embeds each variable in d_e=8 channels with one batched op and
projects the weighted ``[B, T, F*d_e]`` to C once. Both produce ``[B, T, C]`` and feature weights. Ours is
timed with its fused CPU kernels (the default) and in tensor ops (``fused=False``).
Same process, alternating, same threads and allocator setting; median forward+backward seconds.
At hidden 256 both sides use a 256-sample batch: the peer's ``[B, T, C, F]`` stack at B=1,024 needs
more than this machine's 24 GB across forward and backward.

    python benchmarks/bench_vsn.py
"""

from __future__ import annotations

import argparse
import json
import os

import atft  # noqa: F401 - before torch, as `atft train` runs: OpenMP reads its wait policy when torch loads

# isort: split
import torch
from bench_train_step import _steps as median_step  # same warm-up + median timing loop

T, F = 20, 80
BATCH = {64: 1024, 256: 256}


def ours(hidden: int, B: int, fused: bool = True):
    from atft.nn.variable_selection import VariableSelectionNetwork

    vsn = VariableSelectionNetwork(F, 8, hidden, fused=fused)
    proj = torch.nn.Linear(F * 8, hidden)
    x = torch.randn(B, T, F)

    def step():
        selected, _ = vsn(x)
        proj(selected).square().mean().backward()

    return step


def peer(hidden: int, B: int):
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import VariableSelectionNetwork

    names = [f"f{i}" for i in range(F)]
    prescalers = {n: torch.nn.Linear(1, hidden) for n in names}  # hidden_continuous_size = hidden
    vsn = VariableSelectionNetwork({n: hidden for n in names}, hidden, {n: False for n in names},
                                   dropout=0.1, prescalers=torch.nn.ModuleDict(prescalers))
    x = {n: torch.randn(B, T, 1) for n in names}

    def step():
        out, _ = vsn(x)
        out.square().mean().backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "vsn.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for hidden in args.hidden:
        B = BATCH.get(hidden, 256)
        p, o, ops = peer(hidden, B), ours(hidden, B), ours(hidden, B, fused=False)
        tp, to, tops = (median_step(f, 1, args.steps) for f in (p, o, ops))
        row = {"hidden": hidden, "batch": B, "peer_s": tp, "ours_s": to, "speedup": tp / to, "ours_ops_s": tops,
               "speedup_ops": tp / tops,
               "peer_bytes_BTFC": B * T * F * hidden * 4, "ours_bytes_BTFd": B * T * F * 8 * 4}
        rows.append(row)
        print(json.dumps(row))
    env = {"threads": torch.get_num_threads(),
           "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"), "T": T, "F": F}
    tmp = args.out + ".tmp"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(tmp, "w") as fh:
        json.dump({"env": env, "rows": rows}, fh, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
