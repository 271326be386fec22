"""The GPU evidence to refresh whenever GPU code changes: the CUDA tests, the inference benchmark and
the fp16/bf16 accuracy check, in one run, into one result file (commit, machine and versions inside).

    python bench/gpu_check.py --data_dir <cmu_h36m> --ckpt <np checkpoint> --base_ckpt <base checkpoint>

Without checkpoints, the accuracy check trains a short model on `--data_dir` first (20/20/5 epochs;
accuracy changes are measured against float32 on the same weights, so a short model serves).
The result goes to `bench/results/gpu_check_<gpu>.json` (or `--out`); the exit status is 1 when a
test failed or the accuracy bar (ADE/FDE within 0.5 % of float32 under fp16) is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import REPO, table, write

CUDA_TESTS = ["tests/test_fast.py", "tests/test_step_graph.py", "tests/test_oracle.py"]
BAR = 0.5  # per cent: fp16 inference may change ADE and FDE by at most this much


def step(argv: list[str], what: str) -> subprocess.CompletedProcess:
    print(f"== {what}: {' '.join(argv)}", flush=True)
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(proc.stdout[-3000:] + proc.stderr[-2000:], flush=True)
    return proc


def cuda_tests(files: list[str]) -> dict:
    proc = step([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], "CUDA tests")
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", proc.stdout)}
    return {"files": files, "returncode": proc.returncode, **counts,
            "failures": re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)}


def short_model(data_dir: str, folder: Path) -> tuple[str, str]:
    """(np checkpoint, base checkpoint) of a short run of the three stages on `data_dir`."""
    common = ["--cfg", "h36m", "--data_dir", data_dir, "--device", "cuda:0", "--out_dir", str(folder),
              "--val_fraction", "0", "--select", "last", "--metrics_epoch", "0", "--no_progress"]
    for mode, epochs in (("train", 20), ("distill", 20), ("np", 5)):
        proc = step([sys.executable, "-m", "spard.cli", mode, *common, "--num_epoch", str(epochs)], f"short {mode}")
        if proc.returncode:
            raise SystemExit(f"the short {mode} run failed")
    return str(folder / "np" / "np_ckpt.pt"), str(folder / "train" / "ckpt.pt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="the CMU benchmark (Human3.6M format)")
    p.add_argument("--ckpt", default="", help="an np-stage checkpoint for the accuracy check")
    p.add_argument("--base_ckpt", default="", help="a base checkpoint (adds ddim to the accuracy check)")
    p.add_argument("--tests", default=",".join(CUDA_TESTS), help="the test files to run ('' for none)")
    p.add_argument("--inference", default="", help="an inference benchmark file of this commit and GPU to take "
                                                     "instead of running the benchmark again")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU")
    gpu = torch.cuda.get_device_name(0).replace("NVIDIA ", "").split()[0].lower()
    files = [f for f in args.tests.split(",") if f]
    report = {"tests": cuda_tests(files) if files else None}
    with tempfile.TemporaryDirectory() as tmp:
        inference = Path(args.inference) if args.inference else Path(tmp) / "inference.json"
        if not args.inference:
            step([sys.executable, "bench/inference.py", "--device", "cuda", "--batches", "1,1024", "--samplers",
                  "np,onestep,ddim", "--variants", "compiled-fp16", "--out", str(inference)], "inference benchmark")
        report["inference"] = json.loads(inference.read_text()) if inference.exists() else None
        ckpt, base = (args.ckpt, args.base_ckpt) if args.ckpt else short_model(args.data_dir, Path(tmp) / "short")
        precision = Path(tmp) / "precision.json"
        step([sys.executable, "bench/precision.py", "--ckpt", ckpt, *(["--base_ckpt", base] if base else []),
              "--data_dir", args.data_dir, "--device", "cuda", "--out", str(precision)], "accuracy check")
        report["precision"] = json.loads(precision.read_text()) if precision.exists() else None
    rows = (report["precision"] or {}).get("rows", [])
    worst = max((abs(r["fp16 change %"]) for r in rows if r["metric"] in ("ADE", "FDE")), default=None)
    report["fp16_worst_ade_fde_change_pct"] = worst
    ok = (report["tests"] is None or (report["tests"]["returncode"] == 0)) and worst is not None and worst <= BAR \
        and report["inference"] is not None
    report["ok"] = ok
    path = write(f"gpu_check_{gpu}", report, args.out)
    if report["inference"]:
        print(table(report["inference"]["rows"], ["sampler", "histories", "variant", "median_ms", "samples_per_s",
                                                 "pct_bf16_peak"]))
    print(f"tests: {report['tests']}\nfp16 worst ADE/FDE change: {worst} % (bar {BAR} %)\nwrote {path}; "
          f"{'all good' if ok else 'NOT all good'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
