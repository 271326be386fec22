"""Reading torch files (checkpoints, the FID classifier) without running code: `torch.load` with
`weights_only=True` accepts tensors and plain containers only. What it refuses comes back as one
`UnreadableTorchFile` that its callers turn into their own one-line message."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch


class UnreadableTorchFile(Exception):
    """`code`: the global the file asks to call (it could run code), or None; `detail`: what is wrong, one short line."""

    def __init__(self, code: str | None, detail: str):
        super().__init__(code or detail)
        self.code, self.detail = code, detail


def load_tensors(path: str | Path, map_location="cpu"):
    """`torch.load(path, weights_only=True)`, its refusals as `UnreadableTorchFile`."""
    try:
        with warnings.catch_warnings():  # torch's notes (e.g. on TorchScript archives): the refusal says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refused, truncated zip, not a torch file, ...
        raise _refusal(str(e)) from None


def _refusal(error: str) -> UnreadableTorchFile:
    code = re.search(r"GLOBAL ([\w.]+)", error)
    lines = [line.strip() for line in error.splitlines() if line.strip()] or ["unreadable"]
    after = [i + 1 for i, line in enumerate(lines[:-1]) if line.endswith("WeightsUnpickler error:")]
    return UnreadableTorchFile(code.group(1) if code else None, lines[after[0] if after else 0].split(". ")[0][:160])
