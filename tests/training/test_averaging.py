"""The weight average without host syncs (atft.training.averaging): torch's EMA, step for step."""

from unittest import mock

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from atft.training.averaging import EMAModel


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)  # float running stats and an integer counter among the buffers

    def forward(self, x):
        return self.norm(self.lin(x))


def _same_as_torch(ours: EMAModel, ref: AveragedModel, net: torch.nn.Module) -> None:
    """Float tensors as torch's EMA; integer buffers copied from the model (torch blends and truncates them)."""
    for (name, a), b in zip(ours.module.state_dict().items(), ref.module.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-6), name
        else:
            assert torch.equal(a, net.state_dict()[name]), name


def _steps(net: torch.nn.Module, models: list, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        net.train()
        loss = net(torch.randn(8, 4, generator=gen)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for m in models:
            m.update_parameters(net)


def test_matches_torch_ema_step_for_step_buffers_included():
    torch.manual_seed(0)
    net = _Net()
    ours = EMAModel(net, decay=0.9)
    ref = AveragedModel(net, use_buffers=True, avg_fn=get_ema_avg_fn(0.9))
    _steps(net, [ours, ref], 6)
    _same_as_torch(ours, ref, net)
    assert int(ours.n_averaged) == int(ref.n_averaged) == 6
    assert not torch.allclose(ours.module.lin.weight, net.lin.weight)  # an average, not a copy


def test_a_resumed_average_continues_from_the_checkpointed_count_without_reading_the_device_again():
    torch.manual_seed(0)
    net = _Net()
    first = EMAModel(net, decay=0.8)
    _steps(net, [first], 3)
    resumed = EMAModel(net, decay=0.8)
    resumed.load_state_dict(first.state_dict())  # what Lightning's checkpoint restores
    ref = AveragedModel(net, use_buffers=True, avg_fn=get_ema_avg_fn(0.8))
    ref.load_state_dict(first.state_dict())
    _steps(net, [resumed, ref], 1, seed=1)  # the first update reads n_averaged (3): an average, not a copy
    # later updates never turn a tensor into a Python value (on a GPU each would be a device-to-host sync)
    with mock.patch.object(torch.Tensor, "__bool__", side_effect=AssertionError("host read")), \
            mock.patch.object(torch.Tensor, "__int__", side_effect=AssertionError("host read")), \
            mock.patch.object(torch.Tensor, "item", side_effect=AssertionError("host read")):
        for _ in range(2):
            resumed.update_parameters(net)
    ref.update_parameters(net)
    ref.update_parameters(net)
    assert int(resumed.n_averaged) == 6
    _same_as_torch(resumed, ref, net)
