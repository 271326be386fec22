"""Tables of the CMU study (`bench/cmu_study.py`) from its metrics files: mean and spread over seeds of
every metric per sampler and precision, tests across seeds against the published implementation, the
np stage's length, and the noise-predictor objectives with the choice made on validation.

    python bench/cmu_table.py bench/results/cmu_study          # markdown on stdout, summary.json beside
    python bench/cmu_table.py bench/results/np_objectives_cpu bench/results/cmu_cpu   # several folders

The choice of objective (fixed before the study ran): among the variants whose validation APD is at
least 90 % of the onestep sampler's validation APD on the same distilled model (onestep's APD stands in
for ddim's, which it matches within a few per cent on this benchmark; ddim is not run on validation),
the one with the lowest mean validation FDE over the seeds, ties broken by ADE. The test set is only
reported. (A folder's `ddim.json` stands for the ddim run of every objectives file without its own.)
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

METRICS = ("APD", "APDE", "ADE", "FDE", "MMADE", "MMFDE", "CMD")
# the published implementation trained the same way (100/100/10 epochs, final weights), seeds 0 and 2
PUBLISHED = {
    "ddim": {"APD": (6.80, 6.92), "ADE": (0.474, 0.478), "FDE": (0.448, 0.467)},
    "onestep": {"APD": (6.66, 6.81), "ADE": (0.481, 0.484), "FDE": (0.456, 0.475)},
    "np": {"APD": (2.05, 2.21), "ADE": (0.474, 0.484), "FDE": (0.509, 0.524)},
}


def load(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem not in ("summary", "run")}


def sources(folders) -> list[dict]:
    """The commits and machines of the runs summarised: from each folder's files that record them (a study's
    run.json, the CPU recipe's times.json, np_study's objectives files); the evaluation records do not."""
    seen = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "commit" in record and "machine" in record:
                key = json.dumps([record["commit"], record["machine"]], sort_keys=True)
                seen.setdefault(key, {"commit": record["commit"], "machine": record["machine"], "files": []})
                seen[key]["files"].append(str(path))
    return list(seen.values())


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    out = {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    out["sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def cell(s: dict, digits: int = 3) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def seed_rows(runs: dict, precision: str, sampler: str, label: str | None = None) -> list[dict]:
    label = label or sampler
    return [r["metrics"] for name, r in sorted(runs.items())
            if name.startswith(f"{precision}_s") and name.endswith(f"_{label}")]


def seed_table(runs: dict) -> tuple[str, dict]:
    lines = ["| sampler | precision | seeds | " + " | ".join(METRICS) + " |", "|---" * (3 + len(METRICS)) + "|"]
    summary = {}
    for sampler, label in (("ddim", "ddim"), ("onestep", "onestep"), ("np", "np")):
        ours = len(summary)
        for precision in ("tf32", "bf16"):
            rows = seed_rows(runs, precision, sampler, label) or seed_rows(runs, precision, sampler, "np_epoch10")
            if not rows:
                continue
            s = {m: spread([r.get(m) for r in rows]) for m in METRICS}
            summary[f"{sampler}/{precision}"] = s
            lines.append(f"| {sampler} | {precision} | {len(rows)} | " + " | ".join(cell(s[m]) for m in METRICS) + " |")
        if sampler in PUBLISHED and len(summary) > ours:  # beside seeds of ours only
            pub = PUBLISHED[sampler]
            lines.append(f"| {sampler} | published | 2 | " + " | ".join(
                cell(spread(list(pub[m]))) if m in pub else "" for m in METRICS) + " |")
    return "\n".join(lines), summary


def apd_tests(runs: dict) -> tuple[str, dict]:
    """Welch's t-test of each sampler's APD (and ADE, FDE): our seeds against the two published seeds,
    and TF32 against bf16 (the test chosen beforehand). Beside it, as checks of how much the answer rests
    on the test: Student's t-test (equal variances, as seeds of one method should have) and the exact
    Mann-Whitney rank test."""
    lines = ["| sampler | metric | comparison | means | t | p (Welch) | p (Student) | p (rank) |", "|---" * 8 + "|"]
    out = {}
    for sampler in ("ddim", "onestep", "np"):
        for metric in ("APD", "ADE", "FDE"):
            ours = {p: [r[metric] for r in (seed_rows(runs, p, sampler) or seed_rows(runs, p, sampler, "np_epoch10"))]
                    for p in ("tf32", "bf16")}
            pairs = [("tf32 vs published", ours["tf32"], list(PUBLISHED[sampler][metric])),
                     ("bf16 vs published", ours["bf16"], list(PUBLISHED[sampler][metric])),
                     ("tf32 vs bf16", ours["tf32"], ours["bf16"])]
            for what, a, b in pairs:
                if len(a) < 2 or len(b) < 2:
                    continue
                t, p = stats.ttest_ind(a, b, equal_var=False)
                p_student = stats.ttest_ind(a, b).pvalue
                p_rank = stats.mannwhitneyu(a, b, method="exact").pvalue
                out[f"{sampler}/{metric}/{what}"] = {"t": float(t), "p": float(p), "p_student": float(p_student),
                                                     "p_rank": float(p_rank), "mean_a": statistics.fmean(a),
                                                     "mean_b": statistics.fmean(b), "n_a": len(a), "n_b": len(b)}
                lines.append(f"| {sampler} | {metric} | {what} | {statistics.fmean(a):.3f} vs {statistics.fmean(b):.3f} "
                             f"| {t:.2f} | {p:.3f} | {p_student:.3f} | {p_rank:.3f} |")
    return "\n".join(lines), out


def length_table(runs: dict) -> tuple[str, dict]:
    """The np stage at several lengths: the bf16 seeds' long runs (test), and np_study's variants (test, on 90 %
    of the training windows; the published objective, and any other measured at more than one length), there
    also against the APD of the onestep sampler of the same distilled model."""
    keys = ("APD", "ADE", "FDE", "MMADE", "MMFDE")
    lines = ["| np epochs | source | seeds | " + " | ".join(keys) + " | APD / onestep APD |", "|---" * 9 + "|"]
    studies = [r for n, r in runs.items() if n.endswith("_objectives")]
    variants = [v for v in _variants(studies)
                if v == "published" or any(len(r["variants"].get(v, {}).get("epochs", {})) > 1 for r in studies)]
    out = {}
    for epochs in (10, 30, 100):
        sources = {"np stage (bf16)": ([r["metrics"] for n, r in runs.items() if n.endswith(f"_np_epoch{epochs}")], [])}
        for v in variants:
            measured = [(r["variants"][v]["epochs"][str(epochs)]["test"], r["onestep"]["test"]["APD"]) for r in studies
                        if str(epochs) in r["variants"].get(v, {}).get("epochs", {})]
            name = "published objective" if v == "published" else f"`{v}`"
            sources[f"np_study, {name}"] = ([m for m, _ in measured], [m["APD"] / onestep for m, onestep in measured])
        for source, (rows, ratios) in sources.items():
            if rows:
                s = {m: spread([r[m] for r in rows]) for m in keys} | {"apd_over_onestep": spread(ratios)}
                out[f"{source}/{epochs}"] = s
                lines.append(f"| {epochs} | {source} | {len(rows)} | " + " | ".join(cell(s[m]) for m in keys) +
                             f" | {cell(s['apd_over_onestep'], 2) if ratios else ''} |")
    return "\n".join(lines), out


def _variants(studies) -> list[str]:
    """Every variant of the studies, in the order they first appear (files may hold different ones)."""
    return list(dict.fromkeys(v for study in studies for v in study["variants"]))


def objectives(runs: dict) -> tuple[str, dict]:
    studies = {n: r for n, r in runs.items() if n.endswith("_objectives")}
    if not studies:
        return "", {}
    variants = _variants(studies.values())
    table = {}
    for v in variants:
        val, test, ratio, diag = [], [], [], []
        for name, study in studies.items():
            if v not in study["variants"]:
                continue
            row = study["variants"][v]
            last = row["epochs"][str(max(int(e) for e in row["epochs"]))]
            val.append(last["val"] | {"onestep_APD": study["onestep"]["val"]["APD"]})
            test.append(last["test"])
            ddim = (runs.get(name.replace("_objectives", "_ddim")) or runs.get("ddim") or {}).get("metrics", {}).get("APD")
            ratio.append(last["test"]["APD"] / ddim if ddim else None)
            if "diagnostics" in row:  # written once the variant's last epoch is done
                diag.append(row["diagnostics"])
        table[v] = {
            "seeds": len(val),
            "val": {m: spread([r[m] for r in val]) for m in ("APD", "ADE", "FDE")},
            "val_apd_over_onestep": spread([r["APD"] / r["onestep_APD"] for r in val]),
            "test": {m: spread([r[m] for r in test]) for m in METRICS},
            "test_apd_over_ddim": spread(ratio),
            "maps_that_win": spread([d["maps_that_win"] for d in diag]),
            "top_map_share": spread([d["top_map_share"] for d in diag]),
            "pairwise_over_gaussian": spread([d["pairwise_distance"] / d["gaussian_pairwise_distance"] for d in diag]),
            "spread_kl": spread([d["spread_kl"] for d in diag]),
        }
    eligible = [v for v in variants if table[v]["val_apd_over_onestep"].get("mean", 0) >= 0.9]
    winner = min(eligible, key=lambda v: (table[v]["val"]["FDE"]["mean"], table[v]["val"]["ADE"]["mean"])) \
        if eligible else None
    head = ["variant", "seeds", "val APD/onestep", "val ADE", "val FDE", "test APD", "test APD/ddim", "test ADE", "test FDE",
            "test MMADE", "test MMFDE", "test APDE", "test CMD", "maps that win (of K)", "pairwise dist / N(0,I)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for v in variants:
        t = table[v]
        mark = " (chosen)" if v == winner else ""
        lines.append("| " + " | ".join([
            f"`{v}`{mark}", str(t["seeds"]), cell(t["val_apd_over_onestep"], 2), cell(t["val"]["ADE"]), cell(t["val"]["FDE"]),
            cell(t["test"]["APD"], 2), cell(t["test_apd_over_ddim"], 2), cell(t["test"]["ADE"]), cell(t["test"]["FDE"]),
            cell(t["test"]["MMADE"]), cell(t["test"]["MMFDE"]), cell(t["test"]["APDE"], 2), cell(t["test"]["CMD"], 2),
            cell(t["maps_that_win"], 1), cell(t["pairwise_over_gaussian"], 2)]) + " |")
    return "\n".join(lines), {"variants": table, "chosen_on_validation": winner}


def main() -> None:
    folder = Path(sys.argv[1])
    runs = {name: run for f in sys.argv[1:] for name, run in load(Path(f)).items()}
    parts, summary = [], {}
    for title, fn in (("Seeds: mean ± sd", seed_table), ("Across seeds (Welch's t-test)", apd_tests),
                      ("The np stage's length", length_table), ("Noise-predictor objectives", objectives)):
        text, data = fn(runs)
        summary[title] = data
        parts.append(f"### {title}\n\n{text}\n")
    summary["measured by"] = sources(Path(f) for f in sys.argv[1:])
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=lambda x: None if
                                                    isinstance(x, float) and math.isnan(x) else x))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
