"""Exponential moving average of the weights (``train.weight_averaging``) without a host sync per step.

Lightning's ``EMAWeightAveraging`` keeps the average in torch's ``AveragedModel``, whose
``update_parameters`` reads its step counter (a tensor on the model's device) in two Python ``if``\\ s and
runs the average one parameter at a time: on a GPU that is two device-to-host syncs and a few hundred small
kernels after every optimiser step. ``EMAModel`` keeps the same state (the averaged copy and the
``n_averaged`` buffer, so checkpoints and resumes are Lightning's) but counts updates on the host and
updates all floating-point tensors with one fused ``lerp`` per dtype and device (non-float buffers, such
as a batch norm's step counter, are copied from the model; torch's EMA blends and truncates them). The
counter is read from the device once, at the first update (0, or a resumed run's count).
"""

from __future__ import annotations

from itertools import chain

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel


class EMAModel(AveragedModel):
    """``AveragedModel`` with ``average = decay * average + (1 - decay) * current`` after the first update
    (which copies), computed as ``lerp(average, current, 1 - decay)`` without reading device tensors."""

    def __init__(self, model: torch.nn.Module, decay: float, device=None):
        super().__init__(model, device=device, use_buffers=True)
        self.decay = float(decay)
        self._count: int | None = None  # updates so far, on the host; None until the first update reads it

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        mine = list(chain(self.module.parameters(), self.module.buffers()))
        theirs = [t.detach() for t in chain(model.parameters(), model.buffers())]
        if self._count is None:
            self._count = int(self.n_averaged)  # the one read: 0 on a fresh run, the checkpoint's on a resume
        groups: dict[tuple, tuple[list, list]] = {}
        for a, c in zip(mine, theirs, strict=True):
            c = c.to(a.device)
            if self._count == 0 or not a.is_floating_point():
                a.copy_(c)
            else:
                pair = groups.setdefault((a.device, a.dtype), ([], []))
                pair[0].append(a)
                pair[1].append(c.to(a.dtype))
        for avg, cur in groups.values():
            torch._foreach_lerp_(avg, cur, 1.0 - self.decay)
        self.n_averaged += 1  # on the device, no sync: the checkpointed count stays torch's
        self._count += 1


class SyncFreeEMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` (validation, checkpoints and resume unchanged) on ``EMAModel``."""

    def __init__(self, decay: float):
        super().__init__(decay=decay)
        self.decay = float(decay)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._average_model = EMAModel(pl_module, self.decay, device=self._device or pl_module.device)
