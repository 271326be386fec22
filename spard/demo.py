"""`spard demo`: SPARD end to end on the embedded DeepMimic clips, on a CPU, in minutes.

Trains the three stages (base diffusion -> distilled one-step -> noise predictor), evaluates the
three samplers and the zero-velocity baseline on the test windows, and writes to `--out_dir`:

    report.md          the metrics table, time per prediction, settings and timings
    predictions.gif    history, then sampled futures side by side, for test windows of different actions
    losses.png         training and validation losses of the three stages
    train/ distill/ np/    the stage results (`np/np_ckpt.pt` is what `spard.Predictor` loads) and run folders

Reruns: with `--overwrite` a rerun trains afresh into new run folders (`<stage>/runs/NNN/`, earlier
ones stay) and replaces the stage results; `--reuse` evaluates the stage results already there
instead (a missing stage, and every stage after it, is trained); without either, a rerun over
earlier results stops and changes nothing. An earlier report and its pictures
are kept as `report-<time>.md`, `predictions-<time>.gif`, `losses-<time>.png`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from datetime import datetime
from pathlib import Path

from .arguments import Parser, UsageError, positive
from .stages import STAGES

EPOCHS = {"base": 15, "distill": 5, "np": 2}  # with the deepmimic preset: ~6 min on one CPU thread
OUTPUTS = ("report.md", "predictions.gif", "predictions.mp4", "losses.png")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="spard demo", description="SPARD end to end on the embedded DeepMimic clips: train the three "
               "stages, evaluate the three samplers and the zero-velocity baseline, and write report.md, "
               "predictions.gif and losses.png to --out_dir (about 6 minutes on 2 CPU cores).",
               epilog="Reruns: " + __doc__.split("Reruns: ")[1].replace("\n", " ").replace("    ", " "),
               replaces="stage results already in --out_dir (retrained)")
    p.add_argument("--out_dir", default="results/demo", help="where everything is written (default results/demo)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda:0 when there is one, else cpu)")
    p.add_argument("--threads", type=positive(int), default=1,
                   help="CPU threads of torch (default 1: on an idle 2-core machine a second thread makes the demo "
                        "1.7x faster, on a busy one many times slower; try 2 when nothing else runs)")
    p.add_argument("--epochs", default=None,
                   help=f"epochs of the base, distill and np stages (default {','.join(map(str, EPOCHS.values()))})")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate the stage results already in --out_dir; train only the missing ones")
    p.add_argument("--gif_windows", type=positive(int), default=4, help="test windows (different actions) in the GIF")
    p.add_argument("--gif_futures", type=positive(int), default=4, help="np futures per window in the GIF")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


# ------------------------------------------------------------------------------------------ settings

def demo_epochs(text: str | None) -> dict[str, int]:
    """Epochs per stage: `--epochs B,D,N`, else EPOCHS."""
    if text is None:
        return dict(EPOCHS)
    try:
        epochs = [int(e) for e in text.replace(",", " ").split()]
    except ValueError:
        epochs = []
    if len(epochs) != 3 or min(epochs) < 1:
        raise UsageError(f"--epochs expects three positive numbers (base, distill, np) like 15,5,3, got {text!r}")
    return dict(zip(STAGES, epochs))


def stage_config(cfg, epochs: int):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_epoch=epochs))


# ------------------------------------------------------------------------------------------ stages

def train_stage(stage: str, cfg, model, dataset, out_dir: Path, device, progress: bool) -> Path:
    """One stage in a new run folder; its selected weights replace `<out_dir>/<stage folder>/<ckpt>`."""
    from .runs import StageLock, make_folder, make_logger, open_run
    from .train import Trainer

    make_folder(out_dir / STAGES[stage].folder)
    with StageLock(out_dir / STAGES[stage].folder):
        run_dir, _ = open_run(out_dir, stage, resume=False, overwrite=True)
        make_folder(run_dir)
        log = make_logger(run_dir)
        trainer = Trainer(cfg, stage, model, dataset, run_dir, out_dir, device, log, progress=progress, overwrite=True)
        path = trainer.fit()
        for handler in log.handlers:
            handler.close()
    return path


def stage_models(cfg, epochs: dict, dataset, out_dir: Path, device, reuse: bool, progress: bool) -> tuple[dict, dict]:
    """The three stage results, trained here or reused: `({stage: (model, ckpt)}, {stage: train seconds})`."""
    from .checkpoints import load_model
    from .runs import result_path

    models, seconds, retrain = {}, {}, not reuse
    for stage in STAGES:
        path = result_path(out_dir, stage)
        scfg = stage_config(cfg, epochs[stage])
        if retrain or not path.is_file():
            retrain = True  # later stages start from this one
            print(f"\n== {STAGES[stage].title}: {epochs[stage]} epochs", flush=True)
            start = time.time()
            previous = STAGES[stage].previous
            before = load_model(result_path(out_dir, previous.name), scfg)[0] if previous else None
            model = STAGES[stage].start(before, scfg)
            train_stage(stage, scfg, model, dataset, out_dir, device, progress)
            seconds[stage] = time.time() - start
        else:
            print(f"reusing {path}")
        model, ckpt = load_model(path)
        models[stage] = (model.to(device), ckpt)
    return models, seconds


def evaluate_all(models: dict, dataset, cfg, device, progress: bool) -> dict[str, dict]:
    """Metrics of the three samplers and the zero-velocity baseline on the test windows."""
    from .evaluate import evaluate, make_protocol
    from .samplers import SamplerOptions

    protocol = make_protocol(dataset, cfg.data.t_his, cfg.data.multimodal_threshold, device=device)
    tc = cfg.train
    rows = {}
    for stage in STAGES.values():
        rows[stage.sampler] = evaluate(models[stage.name][0], protocol, SamplerOptions.from_config(cfg, stage.sampler),
                                       batch_size=tc.eval_batch_size, seed=tc.seed, progress=progress)
    rows["zero_velocity"] = evaluate(models["np"][0], protocol, SamplerOptions("zero_velocity", 1),
                                     batch_size=tc.eval_batch_size, seed=tc.seed, progress=False)
    return rows


# ------------------------------------------------------------------------------------------ outputs

COLUMNS = (("APD", "APD ↑"), ("APDE", "APDE ↓"), ("ADE", "ADE ↓"), ("FDE", "FDE ↓"), ("MMADE", "MMADE ↓"),
           ("MMFDE", "MMFDE ↓"), ("CMD", "CMD ↓"))


def metrics_table(rows: dict[str, dict], num_samples: int) -> str:
    """A markdown table: one row per sampler, the metrics and the time per prediction."""
    head = ["sampler"] + [title for _, title in COLUMNS] + [f"ms / prediction ({num_samples} futures)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name] + ["n/a" if r.get(k) is None else f"{r[k]:.3f}" for k, _ in COLUMNS]
        cells.append(f"{1000 * r['seconds_per_window']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_losses(models: dict, path: Path) -> Path:
    """Training and validation loss per epoch of each stage, from the run folders' `history.jsonl`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 3.4), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, stage in zip(axes, STAGES):
        run_dir = models[stage][1].get("run_dir")
        history = Path(run_dir or "") / "history.jsonl"
        records = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
        for key, style in (("train_loss", "-o"), ("val_loss", "--s")):
            ax.plot([r["epoch"] for r in records], [r[key] for r in records], style, ms=3, label=key.replace("_", " "))
        ax.set_title(STAGES[stage].title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not records:
            ax.text(0.5, 0.5, "no history.jsonl", ha="center", transform=ax.transAxes)
    axes[0].set_ylabel(f"loss ({models['base'][0].cfg.train.loss})")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def keep_earlier(out_dir: Path) -> list[Path]:
    """Rename an earlier report and its pictures to `<name>-<its time>.<ext>`; returns the new names."""
    report = out_dir / "report.md"
    if not report.is_file():
        return []
    stamp = datetime.fromtimestamp(report.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    kept = []
    for name in OUTPUTS:
        old = out_dir / name
        if old.is_file():
            new = old.with_name(f"{old.stem}-{stamp}{old.suffix}")
            old.rename(new)
            kept.append(new)
    return kept


def threads(torch) -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'s' * (n != 1)}"


def stage_line(stage: str, ckpt: dict, epochs: dict, seconds: dict) -> str:
    n = epochs[stage]
    how = f"trained {n} epoch{'s' * (n != 1)} in {seconds[stage]:.0f} s" if stage in seconds else "reused"
    return f"{stage} ({how}; weights of epoch {ckpt.get('epoch', '?')}, {ckpt.get('selected', '?')})"


def write_report(path: Path, *, rows, dataset, epochs, models, seconds, device, command) -> None:
    import torch

    model = models["np"][0]
    cfg = model.cfg
    d, den, tc = cfg.data, cfg.denoiser, cfg.train
    params = sum(p.numel() for p in model.denoiser.parameters())
    np_params = sum(p.numel() for p in model.noise_predictor.parameters())
    trained = ", ".join(f"{s} {seconds[s]:.0f} s" for s in STAGES if s in seconds)
    timings = "; ".join([f"training {trained}" if trained else "nothing trained (--reuse)"] +
                        [f"{name} {seconds[name]:.0f} s" for name in ("evaluation", "pictures", "total")])
    lines = [
        "# SPARD demo", "",
        f"`{command}`, {datetime.now():%Y-%m-%d %H:%M}, device {device} ({threads(torch)}): "
        f"{seconds['total'] / 60:.1f} min.", "",
        f"## Test metrics ({len(dataset.test_windows)} windows, {tc.num_samples} futures each)", "",
        metrics_table(rows, tc.num_samples), "",
        "Metres, computed as published: ADE/FDE of the best future, MMADE/MMFDE against the multimodal ground "
        "truth, APD the diversity of the futures, APDE its distance to the ground truth's, CMD the motion per "
        "class. FID needs a classifier that DeepMimic lacks. zero_velocity holds the last observed pose. "
        f"Time per prediction: all {tc.num_samples} futures of one history, in batches of {tc.eval_batch_size} "
        "histories.", "",
        "The test windows are the last 20% of each looping clip: other frames of the very cycle the model "
        "trained on. This measures how well it fits the recorded motions, not generalisation.", "",
        "## Timings", "", f"- {timings}", "",
        "## Settings", "",
        f"- data: DeepMimic clips of pybullet_data, {len(dataset.classes)} actions, {d.fps:g} fps, "
        f"{d.t_his} frames observed, {d.t_pred} predicted, {d.num_joints} joints + root; training windows every "
        f"{d.stride} frames; {len(dataset.val_windows)} validation and {len(dataset.test_windows)} test windows",
        f"- denoiser: {params:,} parameters (latent {den.latent_dim}, ff {den.ff_size}, {den.num_layers} layers, "
        f"{den.num_heads} heads, {den.n_pre} DCT tokens, GCN {den.gcn_hidden} x {den.gcn_layers}); noise "
        f"predictor: {np_params:,} parameters, K = {cfg.noise_predictor.k}",
        "- stages: " + "; ".join(stage_line(s, models[s][1], epochs, seconds) for s in STAGES),
        f"- training: batch {tc.batch_size}, lr {tc.lr:g} (x{tc.gamma:g} at epochs {list(tc.milestones)}), "
        f"best of h = {tc.div_k}, {tc.loss} loss; ddim: {cfg.diffusion.sample_steps} steps, guidance {cfg.diffusion.guidance}",
        f"- software: torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}",
        "", "## Files", "",
        "- `predictions.gif`: history (grey), then the ground truth and np futures, for test windows of "
        "different actions",
        "- `losses.png`: losses per epoch of the three stages",
        "- run folders (logs, tensorboard, checkpoints): "
        + ", ".join(f"`{models[s][1].get('run_dir', '?')}`" for s in STAGES),
        "", "```python", "from spard import Predictor",
        f'p = Predictor.from_checkpoint("{path.parent / "np" / "np_ckpt.pt"}")',
        f"futures = p.predict(history, num_samples={tc.num_samples})  # [{d.t_his}, {d.num_joints + 1}, 3] "
        f"metres -> [1, {tc.num_samples}, {d.t_pred}, {d.num_joints + 1}, 3]", "```", "",
    ]
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------ main

def run(args) -> dict:
    import sys

    import torch

    from .api import Predictor
    from .arguments import resolve_device, seed_everything
    from .config import preset
    from .data import load_dataset
    from .render import pick_windows, render_windows
    from .runs import check_writable, result_path

    started = time.time()
    out_dir, progress = Path(args.out_dir), not args.no_progress
    cfg = preset("deepmimic")
    epochs = demo_epochs(args.epochs)
    name = args.device if args.device != "auto" else "cuda:0" if torch.cuda.is_available() else "cpu"
    device = torch.device(resolve_device(name))
    torch.set_num_threads(args.threads)
    check_writable(out_dir)
    earlier = [result_path(out_dir, s) for s in STAGES if result_path(out_dir, s).is_file()]
    if earlier and not (args.reuse or args.overwrite):
        raise UsageError(f"{out_dir} holds stage results of an earlier run ({', '.join(str(p.relative_to(out_dir)) for p in earlier)}): "
                         f"pass --overwrite to retrain and replace them, --reuse to evaluate them, or another --out_dir")
    if earlier and not args.reuse:
        print(f"{out_dir} holds stage results of an earlier run: this demo retrains and replaces "
              f"{', '.join(str(p.relative_to(out_dir)) for p in earlier)} (their run folders stay under runs/)")
    if (out_dir / "report.md").is_file():
        print(f"the earlier {out_dir / 'report.md'} will be kept under a time-stamped name")
    seed_everything(cfg.train.seed)

    print(f"loading the DeepMimic clips (device {device}, {threads(torch)})", flush=True)
    dataset = load_dataset(cfg.data)
    models, seconds = stage_models(cfg, epochs, dataset, out_dir, device, args.reuse, progress)

    print("\n== evaluation on the test windows", flush=True)
    start = time.time()
    rows = evaluate_all(models, dataset, models["np"][0].cfg, device, progress)
    seconds["evaluation"] = time.time() - start

    print("== pictures", flush=True)
    start = time.time()
    kept = keep_earlier(out_dir)
    if kept:
        print(f"kept the earlier report as {', '.join(map(str, kept))}")
    shown = pick_windows(dataset.test_labels, args.gif_windows)
    render_windows(Predictor(models["np"][0], "np"), dataset, shown, out_dir / "predictions.gif",
                   num_samples=args.gif_futures)
    plot_losses(models, out_dir / "losses.png")
    seconds["pictures"] = time.time() - start
    seconds["total"] = time.time() - started
    command = " ".join(["spard"] + sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "spard demo"
    write_report(out_dir / "report.md", rows=rows, dataset=dataset, epochs=epochs, models=models, seconds=seconds,
                 device=device, command=command)

    print("\n" + metrics_table(rows, cfg.train.num_samples))
    print(f"\ndone in {seconds['total'] / 60:.1f} min: {out_dir / 'report.md'}, {out_dir / 'predictions.gif'}, "
          f"{out_dir / 'losses.png'}\nnext: from spard import Predictor; "
          f"p = Predictor.from_checkpoint({str(out_dir / 'np')!r})")
    return rows
