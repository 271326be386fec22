"""Peak memory of `Predictor.predict` against the size of its output, on the CPU: each case in a fresh
process (its peak resident memory rises from after a warm-up call to after the call measured).

    python bench/predict_memory.py                   # this checkout
    python bench/predict_memory.py --base DIR        # and an earlier checkout, in the same run

A tiny randomly initialised Human3.6M-sized model (the size of the output does not depend on the model's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import REPO, table, write

CASES = ((1000, 50), (1, 20000))  # histories x futures, onestep sampler

CHILD = r"""
import json, resource, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from conftest import randomized, tiny_config
from spard import Predictor
from spard.model import SPARD
torch.manual_seed(0)
p = Predictor(randomized(SPARD(tiny_config("h36m"))), "np")
h = (np.random.default_rng(0).normal(0, 0.3, (int(sys.argv[2]), 25, 17, 3)) + [0, 0, 1]).astype(np.float32)
p.predict(h[:1], 4, sampler="onestep")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = p.predict(h, int(sys.argv[3]), sampler="onestep")
rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
print(json.dumps({"output_mib": round(out.nbytes / 2**20, 1), "peak_rise_mib": round(rise, 1),
                  "ratio": round(rise / (out.nbytes / 2**20), 2)}))
"""


def measure(repo: Path, histories: int, futures: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "tests"), str(histories), str(futures)],
                          cwd=repo, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default=None, help="an earlier checkout to measure in the same run")
    p.add_argument("--base_commit", default="", help="the commit that checkout holds (recorded)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = []
    for name, repo in (("before", args.base), ("now", str(REPO))):
        if repo:
            for histories, futures in CASES:
                rows.append({"code": name, "histories": histories, "futures": futures,
                             **measure(Path(repo), histories, futures)})
                print(rows[-1], flush=True)
    print(table(rows, ["code", "histories", "futures", "output_mib", "peak_rise_mib", "ratio"]))
    write("predict_memory_cpu", {"base_commit": args.base_commit, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
