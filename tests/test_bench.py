"""The training benchmark counts the windows it trains: one process and two gloo ranks report the
same global batches (a rate is windows over seconds, so a miscount would scale every rate). Its
profile of extra steps and its DistributedDataParallel options reach the result file."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, write_gsps
from test_distributed import free_port


@pytest.mark.parametrize("ranks", [1, 2])
def test_training_benchmark_counts_global_windows(tmp_path, ranks):
    data = write_gsps(tmp_path / "data").parent
    out = tmp_path / "rates.json"
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                    str(ranks), "--master_addr", "127.0.0.1", "--master_port",
                                                    str(free_port())]
    args = ["--device", "cpu", "--data_dir", str(data), "--small", "--stages", "base,np", "--variants", "ours-tf32",
            "--steps", "3", "--warmup", "1", "--batch_size", "6", "--out", str(out), "--profile_steps", "2",
            "--ddp_options", '{"gradient_as_bucket_view": true}']
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*launcher, str(REPO / "bench" / "training.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["stage"], r["gpus"], r["windows"]) for r in rows] == [("base", ranks, 3 * 6), ("np", ranks, 3 * 6)]
    for r in rows:
        assert r["profile"]["steps"] == 2 and r["profile"]["step_ms"] > 0 and r["profile"]["kernel_ms"] is None  # CPU
        assert r["profile"]["host_ops_ms"] and all(ms > 0 for ms in r["profile"]["host_ops_ms"].values()), r["profile"]
        assert r.get("ddp_options") == ({"gradient_as_bucket_view": True} if ranks > 1 else None)
