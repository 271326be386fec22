"""Data parallelism equals one process: two gloo ranks under torchrun train each stage to the same weights
(BatchNorm statistics, generator state and losses included) and print the same metrics as one process.

Tiny model, embedded DeepMimic data, dropout off, one epoch of 41 windows whose batch sizes leave a last
batch of 3, 1 and 2 windows (base, distill, np): the cases where a rank gets one or no window. Adam moves
every weight by about lr per step, rounding noise included (one process with 2 threads instead of 1 differs
by ~lr/30 after these steps), so lr is small and the tolerance lr/5: a missed step or a wrong gradient
shows as ~lr.
"""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

TINY = ["--latent_dims", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_linear_size", "8",
        "--gcn_layers", "1", "--np_gcn_linear_size", "8", "--np_gcn_layers", "1", "--np_k", "6"]
LR = 5e-5
COMMON = ["--cfg", "deepmimic", "--device", "cpu", "--no_progress", "--num_epoch", "1", "--stride", "150",
          "--lr", str(LR), "--checkpoint_every", "1", "--metrics_epoch", "0", "--dropout", "0", "--gcn_dropout", "0",
          "--np_gcn_dropout", "0", "--div_k", "2", "--num_samples", "4", *TINY]
# mode, batch size, flags; the later stages start from the single-process result of the previous one
STAGES = {
    "train": ("19", []),
    "distill": ("20", ["--ckpt", "one/train/ckpt.pt"]),
    "np": ("13", ["--distill_ckpt", "one/distill/distill_ckpt.pt"]),
}
# A graph convolution's bias that the next BatchNorm cancels gets rounding noise as its gradient, which Adam
# turns into steps of about lr, different in each run; that BatchNorm's running mean follows the bias.
CANCELLED = re.compile(r"\.(gc1|gcbs\.\d+\.gc[12])\.bias$|\.running_mean$")
NOISE = 2 * 4 * LR  # 2 runs x at most 4 steps x lr


def assert_trained_alike(want: dict, got: dict, noise: float = NOISE) -> None:
    """Parameters and BatchNorm buffers equal to lr/5; biases that a BatchNorm cancels to `noise`."""
    assert want.keys() == got.keys()
    for key, value in want.items():
        atol = noise if CANCELLED.search(key) else LR / 5
        rtol = 1e-5 if key.endswith("running_var") else 0  # variances of O(10): summation order shows there
        torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (Linux)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # it ended meanwhile
        return []
    return [n for child in children for n in (int(child), *descendants(int(child)))]


def spard(cwd, ranks: int, *args) -> str:
    """Run `spard <args>` in one process, or under torchrun with `ranks` gloo processes; returns stdout."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr",
                "127.0.0.1", "--master_port", str(free_port()), "-m"] if ranks > 1 else [sys.executable, "-m"]
    # on a hang every process prints where it waits (faulthandler on SIGABRT), and the test fails with that
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([*launcher, "spard.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        for pid in reversed([proc.pid, *descendants(proc.pid)]):  # torchrun's workers sit in their own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"spard {args[0]} with {ranks} ranks hung; stacks:\n{stdout[-2000:]}{stderr[-6000:]}")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]  # spard's one-line errors
    assert proc.returncode == 0, "\n".join(errors) + "\n" + stdout[-2000:] + stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    for mode, (batch, flags) in STAGES.items():
        for ranks, out in ((1, "one"), (2, "two")):
            spard(cwd, ranks, mode, *COMMON, "--batch_size", batch, "--out_dir", out, *flags)
    return cwd


@pytest.mark.parametrize("mode", list(STAGES))
def test_two_ranks_train_like_one_process(workdir, mode):
    run = f"{mode}/runs/001"  # the stage folders are named after the modes
    one, two = (torch.load(workdir / out / run / "last.pt", weights_only=True) for out in ("one", "two"))
    assert_trained_alike(one["model"], two["model"])
    assert torch.equal(one["rng"]["data"], two["rng"]["data"]), "the shared generator drew differently"
    history = [[json.loads(line) for line in (workdir / out / run / "history.jsonl").read_text().splitlines()]
               for out in ("one", "two")]
    for a, b in zip(*history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_two_compiled_ranks_train_like_one_process(workdir):
    """torch.compile on each rank (BatchNorm's sum over ranks stays out of the compiled graph) against
    one eager process: stage 1, whose BatchNorm syncs across ranks."""
    batch, flags = STAGES["train"]
    spard(workdir, 2, "train", *COMMON, "--batch_size", batch, "--out_dir", "two_compiled", "--compile", "default", *flags)
    one, two = (torch.load(workdir / out / "train/runs/001/last.pt", weights_only=True) for out in ("one", "two_compiled"))
    assert_trained_alike(one["model"], two["model"])


@pytest.mark.parametrize("mode,flags", [
    ("eval", ["--ckpt", "one/train/ckpt.pt"]),
    ("np_eval", ["--np_ckpt", "one/np/np_ckpt.pt"]),
])
def test_two_ranks_evaluate_like_one_process(workdir, mode, flags):
    printed = [re.findall(r"^\w+\s*: \(.*\)$", spard(workdir, ranks, mode, *COMMON, "--out_dir", f"eval{ranks}",
                                                        "--eval_batch_size", "16", *flags), flags=re.M)
               for ranks in (1, 2)]
    assert len(printed[0]) == 8 and printed[0] == printed[1]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")
@pytest.mark.parametrize("mode", ["train", "distill"])
def test_two_gpus_with_captured_steps_train_like_one_process(tmp_path, mode):
    """Two NCCL ranks, each step (all-reduce included) replayed from one CUDA graph, against one eager
    process: stride 50 gives 123 windows, 15 batches of 8 (11 eager, the capture, replays) and one of 3."""
    flags = [{"cpu": "cuda", "150": "50"}.get(a, a) for a in COMMON] + ["--batch_size", "8", "--tf32", "false"]
    start = []
    if mode == "distill":  # from a trained stage 1 (the teacher)
        spard(tmp_path, 1, "train", *flags, "--out_dir", "start")
        start = ["--ckpt", "start/train/ckpt.pt"]
    spard(tmp_path, 1, mode, *flags, *start, "--compile", "none", "--out_dir", "one")
    spard(tmp_path, 2, mode, *flags, *start, "--compile", "step-graph", "--out_dir", "two")
    one, two = (torch.load(tmp_path / out / mode / "runs/001/last.pt", weights_only=True) for out in ("one", "two"))
    assert_trained_alike(one["model"], two["model"], noise=2 * 16 * LR)
