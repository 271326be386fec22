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


def test_objective_choice_follows_the_rule_fixed_beforehand(tmp_path):
    """bench/cmu_table.py picks the default noise-predictor objective: among the variants whose validation
    APD is at least 90 % of onestep's, the lowest validation FDE (ties: ADE); the test set never counts."""
    sys.path.insert(0, str(REPO / "bench"))
    import cmu_table

    def metrics(apd, ade, fde):
        return {"APD": apd, "APDE": 1.0, "ADE": ade, "FDE": fde, "MMADE": ade, "MMFDE": fde, "CMD": 1.0}

    def study(val, test):  # variant -> (APD, ADE, FDE) on val / test
        diag = {"maps_that_win": 50, "top_map_share": 0.02, "pairwise_distance": 1.0,
                "gaussian_pairwise_distance": 2.0, "spread_kl": 0.1}
        return {"onestep": {"val": metrics(10.0, 0.4, 0.4)}, "variants": {
            v: {"epochs": {"10": {"val": metrics(*val[v]), "test": metrics(*test[v])}}, "diagnostics": diag}
            for v in val}}

    val = {"published": (3.0, 0.30, 0.20),   # best FDE but too alike: not eligible
           "a": (9.0, 0.36, 0.29),           # eligible (90 % exactly), ties b on FDE, better ADE
           "b": (9.5, 0.37, 0.29),
           "c": (12.0, 0.35, 0.31)}          # eligible, worse FDE
    test = {v: (1.0, 0.9, 0.9) for v in val} | {"c": (12.0, 0.1, 0.1)}  # c best on test: must not matter
    runs = {f"tf32_s{s}_objectives": study(val, test) for s in (0, 1)} | {"tf32_s0_ddim": {"metrics": metrics(10, 1, 1)}}
    text, summary = cmu_table.objectives(runs)
    assert summary["chosen_on_validation"] == "a"
    assert "| `a` (chosen) | 2 |" in text and summary["variants"]["a"]["seeds"] == 2
    assert summary["variants"]["a"]["test_apd_over_ddim"]["n"] == 1  # seed 1 has no ddim file: no ratio


def test_length_table_takes_each_variant_from_the_files_that_hold_it():
    """Study files may hold different variants (a later run adds one): the objectives table lists every
    variant with the number of files that hold it, and the length table has a row per epoch count for the
    published objective and for any variant measured at more than one length."""
    sys.path.insert(0, str(REPO / "bench"))
    import cmu_table

    def metrics(apd):
        return {"APD": apd, "APDE": 1.0, "ADE": 0.4, "FDE": 0.5, "MMADE": 0.4, "MMFDE": 0.5, "CMD": 1.0}

    def study(variants):  # variant -> {epochs: test APD}
        return {"onestep": {"val": metrics(4.0), "test": metrics(4.0)}, "variants": {
            v: {"epochs": {str(e): {"val": metrics(apd), "test": metrics(apd)} for e, apd in epochs.items()}}
            for v, epochs in variants.items()}}

    runs = {f"cpu_s{s}_objectives": study({"published": {10: 3.0 + s, 30: 4.0}}) for s in (0, 1)}
    runs |= {f"cpu_noise_s{s}_objectives": study({"noise:1": {10: 2.0, 30: 4.0 + s}}) for s in (0, 1, 2)}
    runs |= {"cpu_prior_s0_objectives": study({"prior:0.1": {10: 1.0}})}  # one length: not a length row
    text, out = cmu_table.length_table(runs)
    assert set(out) == {f"np_study, {name}/{e}" for name in ("published objective", "`noise:1`") for e in (10, 30)}
    assert out["np_study, published objective/10"]["APD"]["n"] == 2
    assert out["np_study, published objective/10"]["APD"]["mean"] == 3.5
    assert out["np_study, `noise:1`/30"]["APD"]["n"] == 3
    assert out["np_study, `noise:1`/30"]["apd_over_onestep"]["mean"] == 5.0 / 4.0
    assert "| 30 | np_study, `noise:1` | 3 |" in text
    _, summary = cmu_table.objectives(runs)
    assert {v: t["seeds"] for v, t in summary["variants"].items()} == {"published": 2, "noise:1": 3, "prior:0.1": 1}
