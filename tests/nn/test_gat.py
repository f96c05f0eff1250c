import torch

from atft.nn.gat import GraphAttentionBlock, self_loop_graph

C = 16


def _graph():
    # 5 stocks: 0-1-2 a chain, 3-4 a pair; every stock with its self-loop
    pairs = [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)] + [(i, i) for i in range(5)]
    edge_index = torch.tensor(pairs).T  # [2, E]
    g = torch.Generator().manual_seed(0)
    edge_attr = torch.rand(len(pairs), 3, generator=g)
    return edge_index, edge_attr


def _block(seed=0):
    torch.manual_seed(seed)
    return GraphAttentionBlock(C, layers=2, heads=4, dropout=0.1).eval()


def test_permuting_stocks_permutes_outputs():
    block = _block()
    h = torch.randn(5, C)
    edge_index, edge_attr = _graph()
    out = block(h, edge_index, edge_attr)
    perm = torch.tensor([3, 0, 4, 1, 2])  # new position i holds old stock perm[i]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(5)
    out_perm = block(h[perm], inv[edge_index], edge_attr)
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-5, atol=1e-6)


def test_isolated_stock_is_unaffected_by_others():
    block = _block(1)
    edge_index, edge_attr = _graph()
    keep = (edge_index != 4).all(0) | (edge_index[0] == edge_index[1])  # stock 4 keeps only its self-loop
    edge_index, edge_attr = edge_index[:, keep], edge_attr[keep]
    h = torch.randn(5, C)
    out = block(h, edge_index, edge_attr)
    h2 = h.clone()
    h2[:4] = torch.randn(4, C) * 5
    out2 = block(h2, edge_index, edge_attr)
    torch.testing.assert_close(out2[4], out[4])
    assert not torch.allclose(out2[3], out[3])


def test_edge_attributes_change_the_attention():
    block = _block(2)
    edge_index, edge_attr = _graph()
    h = torch.randn(5, C)
    out, att = block(h, edge_index, edge_attr, return_attention=True)
    other = edge_attr.clone()
    other[:, 0] = -other[:, 0]  # flip the sign of every correlation
    out2, att2 = block(h, edge_index, other, return_attention=True)
    alpha, alpha2 = att[0][1], att2[0][1]  # first layer, [E, heads]
    assert alpha.shape == (edge_index.shape[1], 4)
    assert not torch.allclose(alpha, alpha2)
    assert not torch.allclose(out, out2)
    # attention over each target's incoming edges sums to one
    sums = torch.zeros(5, 4).index_add_(0, edge_index[1], alpha)
    torch.testing.assert_close(sums, torch.ones(5, 4))


def test_no_graph_means_self_loops_only():
    block = _block(3)
    h = torch.randn(6, C)
    edge_index, edge_attr = self_loop_graph(6, h.device)
    torch.testing.assert_close(block(h), block(h, edge_index, edge_attr))
    # with only self-loops each stock is processed on its own
    torch.testing.assert_close(block(h)[:3], block(h[:3]))
