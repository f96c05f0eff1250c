"""Layers of ATFT-GAT-FAN: gated residual networks, batched variable selection, adaptive
normalisation, the causal temporal encoder, graph attention, fusion and the multi-horizon head.

Shape letters (DESIGN.md): B samples, T lookback, F features, C hidden, H horizons, Q quantiles, E edges.
"""
