"""The CMU benchmark study behind docs/results.md, as one graph of runs: the three stages for several
seeds, TF32 (the default) and bf16 with `--compile step-graph`, each stage's sampler evaluated on the
shared test set (the np stage with the published noise predictor, `--np_noise 0`, to compare with
the published code); the noise predictor's objectives on the TF32 seeds' distilled models
(`bench/np_study.py`); the np stage's length (10, 30, 100 epochs). Every evaluation writes its JSON
under `--out`; runs go as many at a time as `--jobs`, each after the runs it needs.

    python bench/cmu_study.py --data_dir <cmu_h36m> --out results/cmu_study --jobs 12
    python bench/cmu_study.py --data_dir <cmu_h36m> --out /tmp/smoke --smoke   # the same graph, tiny, on a CPU

`--status` prints what has finished. A run that fails is logged and its dependants are skipped; the
others go on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--latent_dim", "16", "--ff_size", "32", "--num_layers", "2", "--num_heads", "2", "--gcn_hidden", "8",
        "--gcn_layers", "1", "--np_hidden", "8", "--np_layers", "1", "--np_k", "6", "--stride", "200",
        "--num_samples", "4", "--div_k", "2", "--batch_size", "32"]
PRECISIONS = {"tf32": [], "bf16": ["--precision", "bf16", "--compile", "step-graph"], "fp32": ["--precision", "fp32"]}


@dataclass
class Job:
    name: str
    argv: list[str]
    needs: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    heavy: bool = False  # needs a large share of GPU memory (the np stage: K = 50 futures of each window)


def spard(*args) -> list[str]:
    return [sys.executable, "-m", "spard.cli", *args]


def plan(args) -> list[Job]:
    out, smoke = Path(args.out), args.smoke
    epochs = {"base": 1, "distill": 1, "np": 1} if smoke else {"base": 100, "distill": 100, "np": 10}
    long_epochs = [1, 2] if smoke else [10, 30, 100]
    device = "cpu" if smoke else "cuda:0"
    jobs = []
    for precision, extra in ((p, PRECISIONS[p]) for p in args.precisions):
        if smoke and precision == "bf16":
            extra = ["--precision", "bf16"]  # no CUDA graphs on a CPU
        env = {"TORCHINDUCTOR_COMPILE_THREADS": "2"} if "--compile" in extra else {}
        for seed in args.seeds:
            tag, run = f"{precision}_s{seed}", out / f"{precision}_seed{seed}"
            common = ["--cfg", "h36m", "--data_dir", args.data_dir, "--device", device, "--seed", str(seed),
                      "--out_dir", str(run), "--val_fraction", "0", "--select", "last", "--checkpoint_every", "10",
                      "--metrics_epoch", "0", "--no_progress", "--batch_size", "64", "--lr", "1e-4",
                      *(TINY if smoke else [])]
            long = precision == "bf16" and seed in args.long_seeds
            np_epochs = max(long_epochs) if long else epochs["np"]
            jobs += [
                Job(f"{tag}_base", spard("train", *common, *extra, "--num_epoch", str(epochs["base"])), env=env),
                Job(f"{tag}_distill", spard("distill", *common, *extra, "--num_epoch", str(epochs["distill"])),
                    [f"{tag}_base"], env),
                Job(f"{tag}_np", spard("np", *common, *extra, "--np_noise", "0", "--num_epoch", str(np_epochs),
                                       "--save_model_interval", str(min(long_epochs)) if long else "0"),
                    [f"{tag}_distill"], env, heavy=True),
            ]
            evals = [("eval", "ddim", "base", []), ("distill_eval", "onestep", "distill", []),
                     ("np_eval", "np", "np", [])]
            if long:  # the np stage measured at each length from the same run
                ckpts = {e: run / "np" / "runs" / "001" / f"ckpt_{e}.pt" for e in long_epochs}
                evals = evals[:2] + [("np_eval", f"np_epoch{e}", "np", ["--np_ckpt", str(p)]) for e, p in ckpts.items()]
            for mode, label, stage, flags in evals:
                sampler = label.split("_")[0]
                jobs.append(Job(f"{tag}_eval_{label}", spard(mode, *common, "--sample", sampler, *flags, "--json",
                                                        str(out / "metrics" / f"{tag}_{label}.json")),
                                [f"{tag}_{stage}"]))
            if precision == "tf32" and seed in args.study_seeds:
                jobs.append(Job(f"{tag}_objectives", [
                    sys.executable, str(REPO / "bench" / "np_study.py"), "--distill_ckpt",
                    str(run / "distill" / "distill_ckpt.pt"), "--data_dir", args.data_dir, "--seed", str(seed),
                    "--device", device, "--variants", args.variants, "--epochs", str(epochs["np"]), "--long", args.long,
                    "--out", str(out / "metrics" / f"{tag}_objectives.json")], [f"{tag}_distill"], heavy=True))
    base = out / "tf32_seed0"
    for sampler in ("zero_velocity", "constant_velocity"):
        jobs.append(Job(f"baseline_{sampler}", spard(
            "eval", "--cfg", "h36m", "--data_dir", args.data_dir, "--device", device, "--out_dir", str(base),
            "--no_progress", "--sample", sampler, "--json", str(out / "metrics" / f"baseline_{sampler}.json"))))
    return jobs


def run(jobs: list[Job], out: Path, slots: int, heavy_slots: int) -> dict:
    """Start each job once the jobs it needs have finished, at most `slots` at a time (`heavy_slots` of them
    heavy); returns job -> state."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (out / "metrics").mkdir(exist_ok=True)
    state = {j.name: "waiting" for j in jobs}
    by_name = {j.name: j for j in jobs}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    status = out / "status.json"
    while any(s in ("waiting", "running") for s in state.values()):
        for name, (proc, started) in list(running.items()):
            if proc.poll() is not None:
                state[name] = "done" if proc.returncode == 0 else f"failed ({proc.returncode})"
                state[name] += f" in {time.time() - started:.0f} s"
                del running[name]
        for job in jobs:
            if state[job.name] != "waiting":
                continue
            needs = [state[n] for n in job.needs]
            if any(not (s.startswith("done") or s in ("waiting", "running")) for s in needs):
                state[job.name] = "skipped"
            elif all(s.startswith("done") for s in needs) and len(running) < slots and \
                    (not job.heavy or sum(by_name[n].heavy for n in running) < heavy_slots):
                log = open(logs / f"{job.name}.log", "w")
                proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, **job.env, "PYTHONUNBUFFERED": "1"})
                running[job.name], state[job.name] = (proc, time.time()), "running"
        status.write_text(json.dumps(state, indent=1))
        time.sleep(2)
    status.write_text(json.dumps(state, indent=1))
    return state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--study_seeds", default="0,1,2", help="TF32 seeds whose distilled model gets the objectives study")
    p.add_argument("--long_seeds", default="0,1,2", help="bf16 seeds whose np stage runs 100 epochs (10/30/100)")
    p.add_argument("--variants", default="published,relaxed:0.05,prior:0.1,noise:0.5,noise:1,prior:0.1+noise:0.5")
    p.add_argument("--long", default="", help="np_study's --long: variant=epochs,... measured at more epochs")
    p.add_argument("--precisions", default="tf32,bf16", help="tf32 (the default), bf16 with --compile step-graph, fp32 (the published code's arithmetic)")
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--heavy_jobs", type=int, default=3, help="np-stage runs at a time (each holds ~15 GB on a GPU)")
    p.add_argument("--smoke", action="store_true", help="tiny models, one epoch, on the CPU: checks the graph")
    p.add_argument("--status", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if args.status:
        print((out / "status.json").read_text())
        return
    args.seeds, args.study_seeds, args.long_seeds = ([int(s) for s in v.split(",") if s] for v in
                                                     (args.seeds, args.study_seeds, args.long_seeds))
    args.precisions = [p for p in args.precisions.split(",") if p]
    from common import write  # the commit and the machine beside the metrics files (they hold neither)

    manifest = out / "metrics" / "run.json"
    write("cmu_study", {"state": "running"}, manifest)
    state = run(plan(args), out, args.jobs, args.heavy_jobs)
    write("cmu_study", {"state": state}, manifest)
    print(json.dumps(state, indent=1))
    failed = [n for n, s in state.items() if not s.startswith("done")]
    print(f"{len(state) - len(failed)} of {len(state)} runs done" + (f"; not done: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
