import math

import numpy as np
import pytest
import torch

from atft.errors import InputError
from atft.graph import day_graph
from atft.graph.day_graph import DayGraphBuilder, residual_returns, window_correlation

D_TEST = 4  # the day whose graph is checked; window W=4 -> days 1..4
WINDOW = np.array([  # days 1..4 (rows) x stocks 0..4 (columns); stock 5 is invalid on day 4
    [1, 2, 1, -1, 3],
    [-1, -1, 1, -2, 1],
    [1, 1, -1, 1, -1],
    [-1, -2, -1, 2, 0],
], dtype=float)
SECTOR = np.array([0, 0, 1, 1, -1, 0])
MARKET = np.array([0, 1, 0, 0, 0, -1])
R01 = 3 / math.sqrt(10)  # s0=[1,-1,1,-1], s1=[2,-1,1,-2]: 6 / (2 sqrt 10)
R23 = -3 / math.sqrt(10)  # s2=[1,1,-1,-1], s3=[-1,-2,1,2]: -6 / (2 sqrt 10)
R24 = 5 / (2 * math.sqrt(8.75))  # s4 demeaned [2.25, .25, -1.75, -.75]: 5 / (2 sqrt 8.75)
R04 = 1.0 / (2 * math.sqrt(8.75))  # s0 . s4 = 2.25 - .25 - 1.75 + .75
R14 = 4.0 / (math.sqrt(10) * math.sqrt(8.75))
R34 = -6.0 / (math.sqrt(10) * math.sqrt(8.75))


def _panel(seed: int = 0):
    rng = np.random.default_rng(seed)
    returns = rng.standard_normal((7, 6))  # day 0 and days 5-6 are noise
    returns[1:5, :5] = WINDOW
    returns[1:5, 5] = 3 * WINDOW[:, 0]  # would be stock 0's perfect twin, but it is not valid on day 4
    valid = np.ones((7, 6), dtype=bool)
    valid[D_TEST, 5] = False
    return returns, valid


def _edges(edge_index: torch.Tensor, edge_attr: torch.Tensor) -> dict[tuple[int, int], list[float]]:
    return {(int(s), int(t)): a.tolist() for s, t, a in zip(edge_index[0], edge_index[1], edge_attr)}


def _loops(stocks):
    return {(i, i): [1.0, float(SECTOR[s] >= 0), float(MARKET[s] >= 0)] for i, s in enumerate(stocks)}


def _assert_edges(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, attr in expected.items():
        np.testing.assert_allclose(got[key], attr, rtol=1e-6, atol=1e-6, err_msg=str(key))


def test_nearest_neighbour_graph_by_hand():
    builder = DayGraphBuilder(*_panel(), SECTOR, MARKET, window=4, k=1)
    edges = _edges(*builder.graph(D_TEST, np.arange(5)))
    # k=1: 0<->1 (|.949|), 2<->3 (|-.949|), 4->2 (.845); symmetrised
    expected = {
        (0, 1): [R01, 1, 0], (1, 0): [R01, 1, 0],
        (2, 3): [R23, 1, 1], (3, 2): [R23, 1, 1],
        (2, 4): [R24, 0, 1], (4, 2): [R24, 0, 1],
    } | _loops(range(5))
    _assert_edges(edges, expected)


def test_two_neighbours_by_hand():
    builder = DayGraphBuilder(*_panel(), SECTOR, MARKET, window=4, k=2)
    edges = _edges(*builder.graph(D_TEST, np.arange(5)))
    # k=2 adds each stock's second choice: 0->4 (.169), 1->4 (.428), 3->4 (|-.641|), 4->3
    undirected = {(0, 1): [R01, 1, 0], (2, 3): [R23, 1, 1], (2, 4): [R24, 0, 1], (0, 4): [R04, 0, 1],
                  (1, 4): [R14, 0, 0], (3, 4): [R34, 0, 1]}
    expected = undirected | {(t, s): a for (s, t), a in undirected.items()} | _loops(range(5))
    _assert_edges(edges, expected)


def test_subset_is_reindexed_and_invalid_stock_gets_only_its_self_loop():
    builder = DayGraphBuilder(*_panel(), SECTOR, MARKET, window=4, k=1)
    stocks = [4, 2, 0, 5]  # positions 0..3
    edges = _edges(*builder.graph(D_TEST, stocks))
    expected = {(0, 1): [R24, 0, 1], (1, 0): [R24, 0, 1]} | _loops(stocks)  # 0's partner 1 is not in the batch
    _assert_edges(edges, expected)


@pytest.mark.parametrize("residual", ["none", "market", "sector"])
def test_no_edge_uses_data_after_the_day(residual):
    returns, valid = _panel()
    base = DayGraphBuilder(returns, valid, SECTOR, MARKET, window=4, k=2, residual=residual)
    for d in range(7):
        future_returns, future_valid = returns.copy(), valid.copy()
        future_returns[d + 1 :] = np.random.default_rng(d).standard_normal(future_returns[d + 1 :].shape)
        future_valid[d + 1 :] = ~future_valid[d + 1 :]
        other = DayGraphBuilder(future_returns, future_valid, SECTOR, MARKET, window=4, k=2, residual=residual)
        for a, b in zip(base.graph(d, np.arange(6)), other.graph(d, np.arange(6))):
            torch.testing.assert_close(a, b)


def test_days_before_the_window_do_not_matter():
    returns, valid = _panel()
    changed = returns.copy()
    changed[0] = 100.0
    a = DayGraphBuilder(returns, valid, SECTOR, MARKET, window=4, k=2).graph(D_TEST, np.arange(6))
    b = DayGraphBuilder(changed, valid, SECTOR, MARKET, window=4, k=2).graph(D_TEST, np.arange(6))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_correlation_with_gaps_follows_the_documented_formula():
    window = np.array([[1, 1], [np.nan, 2], [3, 3], [5, 4]], dtype=float)
    corr, ok = window_correlation(window, min_periods=3)
    # x: observed [1, 3, 5], mean 3 -> z [-2, 0, 0, 2]; y mean 2.5 -> z [-1.5, -.5, .5, 1.5]
    assert ok.tolist() == [True, True]
    assert corr[0, 1].item() == pytest.approx(6 / math.sqrt(8 * 5), rel=1e-6)
    _, ok = window_correlation(window, min_periods=4)
    assert ok.tolist() == [False, True]


def test_blocked_build_equals_the_knn_of_the_whole_correlation_matrix(monkeypatch):
    """The build takes the top-k a block of rows at a time; the graph is the one the whole ``[n, n]``
    matrix gives: same edges, same corr (gaps, short histories, invalid stocks, a partial last block)."""
    rng = np.random.default_rng(3)
    D, N, W, k = 40, 150, 20, 4
    returns = rng.standard_normal((D, N)) + rng.standard_normal((D, 1)) * rng.uniform(-1, 1, N)
    returns[rng.random((D, N)) < 0.05] = np.nan
    returns[20:40, :7] = np.nan  # seven stocks too short of history on the last days
    valid = rng.random((D, N)) > 0.1
    monkeypatch.setattr(day_graph, "TOPK_ROWS", 32)  # 150 stocks: four full blocks and a partial one
    builder = DayGraphBuilder(returns, valid, window=W, k=k)
    for d in (5, 25, 39):
        stocks = np.flatnonzero(valid[d])
        corr, ok = window_correlation(returns[d - W + 1 if d >= W else 0: d + 1, stocks], builder.min_periods)
        score = corr.abs().numpy()
        score[~ok.numpy()] = -1
        score[:, ~ok.numpy()] = -1
        np.fill_diagonal(score, -1)
        expected = {}
        for i in range(len(stocks)):
            for j in np.argsort(-score[i])[:k]:
                if score[i, j] >= 0:
                    for a, b in ((i, j), (j, i)):
                        expected[(int(stocks[a]), int(stocks[b]))] = float(corr[a, b])
        src, dst, got = builder.day_edges(d)
        assert len(src) == len(expected) and (d < 20 or len(src) > 0)
        for a, b, c in zip(src, dst, got):
            assert c == pytest.approx(expected[(int(a), int(b))], abs=1e-6)


def test_stock_with_too_few_observations_gets_no_edges():
    returns, valid = _panel()
    returns[2:5, 0] = np.nan  # stock 0 has 1 of 4 days in the window
    builder = DayGraphBuilder(returns, valid, SECTOR, MARKET, window=4, k=1, min_periods=3)
    edges = _edges(*builder.graph(D_TEST, np.arange(5)))
    assert {e for e in edges if 0 in e} == {(0, 0)}


def test_graphs_are_cached_per_day_and_bad_input_is_rejected():
    builder = DayGraphBuilder(*_panel(), window=4, k=1, cache_days=2)
    for d in (2, 3, 4):
        builder.graph(d, np.arange(6))
    assert list(builder._cache) == [3, 4]
    with pytest.raises(ValueError, match="duplicates"):
        builder.graph(4, [1, 1])
    with pytest.raises(ValueError, match="day index"):
        builder.graph(7, [1])
    with pytest.raises(ValueError, match=r"\[D, N\]"):
        DayGraphBuilder(np.zeros((3, 4)), np.ones((3, 5), dtype=bool))


def test_labels_as_of_each_day_and_unlabelled_stocks_share_nothing():
    """Per-day ids ``[D, N]``: an edge's same-sector flag uses the labels of its own day; a stock with
    no label that day (-1) shares no group with anyone, itself included."""
    returns, valid = _panel()
    sector = np.tile(SECTOR, (7, 1))  # [D, N]
    sector[D_TEST, 1] = -1  # stock 1 has no sector label on the checked day only
    sector[D_TEST - 1, 0] = 5  # a different label the day before must not matter
    edges = _edges(*DayGraphBuilder(returns, valid, sector, MARKET, window=4, k=1).graph(D_TEST, np.arange(5)))
    assert edges[(0, 1)] == pytest.approx([R01, 0, 0]) and edges[(1, 1)] == [1.0, 0.0, 1.0]
    assert edges[(2, 3)] == pytest.approx([R23, 1, 1]) and edges[(4, 4)] == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"sector_id must be \[N=6\] or \[D=7, N=6\]"):
        DayGraphBuilder(returns, valid, sector[:3], MARKET)


def test_residual_returns_remove_each_days_market_and_sector_mean():
    rng = np.random.default_rng(3)
    returns = rng.standard_normal((5, 6)) + 10.0  # [D, N]
    returns[2, 4] = np.nan
    valid = np.ones((5, 6), dtype=bool)
    valid[1, 0] = False  # its return stays but does not enter day 1's means
    sector = np.broadcast_to(np.array([0, 0, 1, 1, 1, -1]), (5, 6))
    market = residual_returns(returns, valid, sector, "market")
    obs = valid & np.isfinite(returns)
    for d in range(5):
        np.testing.assert_allclose(np.nansum(market[d] * obs[d]), 0.0, atol=1e-9)
    assert np.isnan(market[2, 4]) and np.isfinite(market[1, 0])
    res = residual_returns(returns, valid, sector, "sector")
    for d in range(5):
        for members in ([0, 1], [2, 3, 4]):
            used = [i for i in members if obs[d, i]]
            if len(used) > 1:
                np.testing.assert_allclose(res[d, used].sum(), 0.0, atol=1e-9)
    np.testing.assert_allclose(res[:, 5], market[:, 5])  # unlabelled: the market residual
    np.testing.assert_allclose(res[1, [1]], market[1, [1]])  # sector 0 has one valid stock on day 1
    assert residual_returns(returns, valid, sector, "none") is returns
    with pytest.raises(InputError, match="model.graph.residual"):
        residual_returns(returns, valid, sector, "beta")


def test_sector_residual_graph_finds_groups_the_sector_factor_hides():
    rng = np.random.default_rng(0)
    days, n = 120, 40
    sector, cluster = np.arange(n) % 4, (np.arange(n) // 4) % 5  # clusters cut across sectors
    returns = (3.0 * rng.standard_normal((days, 4))[:, sector] + 1.0 * rng.standard_normal((days, 5))[:, cluster]
               + 0.5 * rng.standard_normal((days, n)))  # [D, N]
    valid = np.ones((days, n), dtype=bool)

    def cluster_share(residual):
        src, dst, _ = DayGraphBuilder(returns, valid, sector, window=100, k=4, residual=residual).day_edges(days - 1)
        return float(np.mean(cluster[src] == cluster[dst]))

    assert cluster_share("none") < 0.3  # the edges follow the dominant sector factor
    assert cluster_share("sector") > 0.9


def test_equal_correlations_go_to_the_lower_numbered_stock_across_blocks():
    """Ties in |corr| are broken the same way whichever block pass (rows or columns) meets them."""
    from atft.graph.day_graph import top_partners, unit_columns

    up_down = [0.5, -0.5, 0.5, -0.5]  # mean 0, norm 1: every correlation below is exact (0 or +-1)
    window = np.array([[0.5, 0.5, -0.5, -0.5]] + [up_down] * 4 + [[-x for x in up_down]]).T  # [W=4, n=6]
    z, ok = unit_columns(window, min_periods=4)
    partner, corr = top_partners(z, ok, k=2, rows=2)
    score = np.abs(z.T @ z).numpy()
    np.fill_diagonal(score, -1)
    expected = np.argsort(-score, axis=1, kind="stable")[:, :2]  # the lower stock first among equals
    assert partner.tolist() == expected.tolist()
    assert partner[5].tolist() == [1, 2] and corr[5].tolist() == [-1.0, -1.0]
    assert partner[0].tolist() == [1, 2] and corr[0].tolist() == [0.0, 0.0]
