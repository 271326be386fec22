"""`Fusable`: a module that can carry a fused inference form of itself, derived from its weights.

`spard.fast.fuse(model)` attaches to each fusable module its `fused` form: regrouped arithmetic and
folded weights (buffers, not parameters, outside the state dict) that the module's own `forward`
uses while it is there. The form is derived from the weights as they are when it is made, so it is
dropped whenever they may change: when the module goes to training mode or loads a state dict.
"""
from __future__ import annotations

from torch import nn


class Fusable(nn.Module):
    """Subclasses set `self.fused = None` in `__init__` and use `self.fused` in `forward` when set."""

    def train(self, mode: bool = True):
        if mode:
            self.fused = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self.fused = None
        super()._load_from_state_dict(*args, **kwargs)
