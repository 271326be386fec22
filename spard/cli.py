"""The `spard` command (and the published scripts `h36m_main.py`, `amass_main.py`).

    spard train|distill|np|eval|distill_eval|np_eval [flags]   the six published modes
    spard --mode train --cfg h36m ...                            the same, in the published form
    spard predict | render | view | export | convert | demo      see `spard <command> -h`

Flags keep the published names (as aliases) and defaults; defaults come from the chosen `--cfg`
preset, so `--cfg amass` gets AMASS's stride, threshold and sizes whatever the script. Errors are
one line on stderr with exit status 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .arguments import (Parser, UsageError, add_config_flags, add_sampler_flag, boolean, config_from_args,
                        resolve_device, seed_everything)
from .baselines import BASELINES
from .stages import EVAL_MODES, STAGES, TRAIN_MODES, check_sampler

MODES = tuple(TRAIN_MODES) + tuple(EVAL_MODES)
# commands in modules of their own (spard/<name>.py, with `parser()` and `run(args)`): name -> line for --help
COMMANDS = {
    "predict": "predict futures of your own motion (npz, npy, csv or BVH) with a trained model",
    "render": "GIF/MP4 of the history and K futures of test windows or of a predictions file",
    "view": "an interactive 3D page (one offline HTML file) of predictions",
    "export": "ONNX models of the np and onestep predictors, checked against PyTorch",
    "convert": "published checkpoints to spard's, and back",
    "demo": "SPARD end to end on the embedded DeepMimic clips, on a CPU, in minutes",
}


# ------------------------------------------------------------------------------------------------
# the six modes

def mode_parser(prog: str, default_cfg: str | None, mode: str | None, cfg_name: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="SPARD: the three training stages and their evaluations",
               replaces="an existing stage result or --json file")
    if mode is None:
        p.add_argument("--mode", choices=MODES, default="np_eval", help="what to run (published default np_eval)")
    g = p.add_argument_group("run")
    g.add_argument("--cfg", default=None, help=f"preset: h36m, amass or deepmimic (default: "
                                              f"{default_cfg or 'none, give one'})")
    p.set_defaults(script_cfg=default_cfg)
    g.add_argument("--config", default=None, help="rerun a recorded run: its config.json (flags given here win)")
    g.add_argument("--device", default="cuda:0", help="torch device; falls back to cpu without CUDA")
    g.add_argument("--out_dir", default=None, help="results folder (default results/<cfg>)")
    g.add_argument("--resume", nargs="?", const=True, default=True,
                   help="resume an unfinished run (default), or the given run folder / last.pt")
    g.add_argument("--no_resume", dest="resume", action="store_false", help="always start a new run")
    g.add_argument("--select", choices=("best", "last"), default="best",
                   help="weights written as the stage result: best validation loss or last epoch")
    add_sampler_flag(g, "--sample", baselines=True)
    for s in STAGES.values():
        aliases = ("--model_ckpt",) if s.ckpt_flag == "--ckpt" else ()
        g.add_argument(s.ckpt_flag, *aliases, dest=f"ckpt_{s.name}", default="", metavar="FILE",
                       help=f"{s.title} result (default: {s.folder}/{s.ckpt} in --out_dir, when there)")
    g.add_argument("--use_condition", type=boolean, default=True, help="condition on in onestep/np sampling")
    g.add_argument("--json", default=None, help="evaluation: write the metrics here (default under out_dir/eval)")
    g.add_argument("--save_predictions", default=None, metavar="FILE",
                   help="evaluation: also write every window's sampled futures (the ones measured) to this .npz "
                        "(windows x samples x t_pred x joints x 3 float32: 0.16 GB for the CMU test set at 50 samples, "
                        "5 GB for Human3.6M's)")
    g.add_argument("--no_progress", action="store_true", help="no progress bars")
    g.add_argument("--objective", choices=("x0",), default="x0", help="network target (the published code: x0 only)")
    add_config_flags(p, cfg_name)
    return p


def run_mode(mode: str, args) -> dict | None:
    """Train a stage or evaluate one; everything that can fail on bad input is checked before any
    file is created or written."""
    from . import distributed as dist

    cfg = config_from_args(args)
    out_dir = Path(args.out_dir) if args.out_dir else Path("results") / cfg.data.name
    paths = _checkpoint_paths(args, out_dir, mode)
    device = dist.setup(resolve_device(args.device))
    seed_everything(cfg.train.seed)
    if mode in TRAIN_MODES:
        return _train(TRAIN_MODES[mode], cfg, args, out_dir, paths, device)
    return _evaluate(EVAL_MODES[mode], cfg, args, out_dir, paths, device)


def _checkpoint_paths(args, out_dir: Path, mode: str) -> dict[str, str]:
    """The checkpoint each stage flag names; an empty flag that this mode needs takes the stage's
    result in `out_dir` when it is there."""
    from .runs import result_path

    paths = {name: getattr(args, f"ckpt_{name}") for name in STAGES}
    stage = TRAIN_MODES.get(mode) or EVAL_MODES[mode]
    needed = stage.previous if mode in TRAIN_MODES else stage
    if needed is not None and not paths[needed.name] and (args.sample or "") not in BASELINES:
        found = result_path(out_dir, needed.name)
        if found.is_file():
            print(f"{needed.ckpt_flag} not given: using {found}, the {needed.title} result in {out_dir}")
            paths[needed.name] = str(found)
    return paths


def _train(stage, cfg, args, out_dir: Path, paths: dict, device):
    import torch

    from . import distributed as dist
    from .checkpoints import load_stage_model
    from .data import load_dataset
    from .runs import StageLock, check_resume, make_folder, make_logger, open_run
    from .train import Trainer

    def choose_run():
        return open_run(out_dir, stage.name, resume=args.resume, overwrite=args.overwrite) if dist.is_main() else None

    chosen = choose_run()
    dataset = load_dataset(cfg.data)
    previous = load_stage_model(cfg, stage.previous.name, paths) if stage.previous else None
    model = stage.start(previous, cfg).to(device)
    if chosen and chosen[1] is not None:
        check_resume(chosen[1], model.cfg, dataset.training_sha256)
    # everything is checked: from here on the command writes, one process at a time in this stage folder
    made = [make_folder(out_dir / stage.folder)] if dist.is_main() else []  # removed again if training cannot start
    # locked: the stage folder this command writes its result in, and the one that holds the run it writes
    # (a run resumed from another --out_dir); a second command on either gets a one-line error
    locked = {f.resolve(): f for f in [out_dir / stage.folder] + ([chosen[0].parent.parent] if chosen else [])}
    try:
        with contextlib.ExitStack() as locks:
            for folder in locked.values() if dist.is_main() else ():
                locks.enter_context(StageLock(folder))
            if dist.is_main() and choose_run() != chosen:
                raise UsageError(f"{out_dir / stage.folder} changed while this command started; run it again")
            run_dir, resume_from = dist.broadcast_object(chosen)
            made.append(make_folder(run_dir) if dist.is_main() else None)
            log = make_logger(run_dir if dist.is_main() else None, quiet=not dist.is_main())
            try:
                trainer = Trainer(model.cfg, stage.name, model, dataset, run_dir, out_dir, torch.device(device), log,
                                  resume_from=resume_from, select=args.select, progress=not args.no_progress,
                                  overwrite=args.overwrite)
                _log_start(log, stage.mode, model.cfg, dataset, model)
            except BaseException:
                for handler in log.handlers:
                    handler.close()
                raise
            made = []  # training starts: what it writes is kept, whatever happens
            result_file = trainer.fit()
            log.info(f"stage result: {result_file}")
    except BaseException:
        for folder in reversed([m for m in made if m is not None]):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    dist.teardown()
    return None


def _evaluate(stage, cfg, args, out_dir: Path, paths: dict, device) -> dict:
    from . import distributed as dist
    from .checkpoints import load_stage_model
    from .data import load_dataset
    from .evaluate import evaluate, format_metrics, make_protocol
    from .metrics import load_fid_classifier
    from .model import SPARD
    from .runs import check_writable, make_logger
    from .samplers import SamplerOptions

    name = args.sample or stage.sampler
    check_sampler(stage.name, name)
    check_writable(out_dir / "eval")
    for flag, path in (("--json", args.json), ("--save_predictions", args.save_predictions)):
        if path:
            check_writable(Path(path).absolute().parent)
            if Path(path).exists() and not args.overwrite:
                raise UsageError(f"{flag} {path} already exists; pass --overwrite to replace it, or another path")
    if args.save_predictions and not args.save_predictions.endswith(".npz"):
        raise UsageError(f"--save_predictions must name an .npz file, got {args.save_predictions}")
    if args.save_predictions and dist.world_size() > 1:
        raise UsageError("--save_predictions runs in one process: evaluate without torchrun to save the futures")
    dataset = load_dataset(cfg.data, splits=("test",))  # only what it evaluates: a file of test subjects will do
    baseline = name in BASELINES
    model = (SPARD(cfg) if baseline else load_stage_model(cfg, stage.name, paths)).to(device)
    _check_model_flags(args, model.cfg, ("denoiser", "diffusion") + (("noise_predictor",) if name == "np" else ()))
    # what is evaluated: the model as trained, with this command's data, evaluation settings and guidance
    cfg = dataclasses.replace(model.cfg, diffusion=dataclasses.replace(model.cfg.diffusion,
                                                                       guidance=cfg.diffusion.guidance))
    log = make_logger(None, quiet=not dist.is_main())
    _log_start(log, stage.eval_mode, cfg, dataset, model)
    options = SamplerOptions.from_config(cfg, name, use_condition=args.use_condition,
                                         **({"num_samples": 1} if baseline else {}))
    classifier = load_fid_classifier(cfg.data.fid_classifier, device) if cfg.data.fid_classifier else None
    protocol = make_protocol(dataset, cfg.data.t_his, cfg.data.multimodal_threshold, fid_classifier=classifier,
                             device=device)
    saved = {} if args.save_predictions else None
    keep = (lambda index, pred: saved.update(zip(index.tolist(), pred.cpu().numpy()))) if saved is not None else None
    started = time.time()
    result = evaluate(model, protocol, options, batch_size=cfg.train.eval_batch_size, seed=cfg.train.seed,
                      progress=not args.no_progress, on_batch=keep)
    if dist.is_main():
        log.info(f"sampler {name}: {options.num_samples} futures per window of {len(protocol)} (APD is their diversity)")
        log.info(format_metrics(result))
        record = {"mode": stage.eval_mode, "sampler": name, "windows": len(protocol),
                  "num_samples": options.num_samples, "seconds": time.time() - started, "metrics": result,
                  "config": cfg.to_dict(), "checkpoints": {STAGES[s].ckpt_flag[2:]: p for s, p in paths.items()}}
        path = Path(args.json) if args.json else _new_file(out_dir / "eval", f"{stage.eval_mode}_{name}", ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        log.info(f"metrics written to {path}")
    if saved is not None and dist.is_main():
        from .predictions import evaluated_windows, file_sha256

        source = paths.get(stage.name) or ""
        futures = np.stack([saved[i] for i in range(len(protocol))])  # [N, S, t_pred, D] (this process's windows)
        evaluated_windows(dataset, cfg.data.t_his, futures, sampler=name,
                          checkpoint_sha256=file_sha256(source) if source else "").save(args.save_predictions,
                                                                                       overwrite=args.overwrite)
        log.info(f"the {futures.shape[0]} x {futures.shape[1]} futures written to {args.save_predictions}")
    dist.teardown()
    return result


def _check_model_flags(args, model_cfg, sections: tuple[str, ...]) -> None:
    """Evaluation uses the networks as trained: a setting of the model's `sections` given on the line (its sizes,
    its noise predictor when the np sampler runs, its diffusion; not the guidance weight, which evaluation
    takes) must be the checkpoint's."""
    from .config import fields_of, flag_of

    for section in sections:
        for f, s, _ in fields_of(getattr(model_cfg, section)):
            given, trained = getattr(args, f"{section}.{f.name}", None), getattr(getattr(model_cfg, section), f.name)
            if given is not None and given != trained and f"{section}.{f.name}" != "diffusion.guidance":
                raise UsageError(f"--{flag_of(f, s)} {given} differs from the checkpoint's {trained}: evaluation uses "
                                 f"the model as trained; leave the flag out")


def _log_start(log, mode: str, cfg, dataset, model) -> None:
    """A short summary of the run (the full config is in the run folder's config.json or the metrics JSON)."""
    d, den, t = cfg.data, cfg.denoiser, cfg.train
    params = sum(p.numel() for p in model.parameters())
    log.info(f"spard {mode}: {d.name} ({d.data_dir or 'embedded'}), {d.t_his} -> {d.t_pred} frames at {d.fps:g} fps, "
             f"{d.num_joints} joints; transformer {den.num_layers} x {den.latent_dim}, {params / 1e6:.2f} M parameters; "
             + (f"batch {t.batch_size}, lr {t.lr:g}, epochs {t.start_epoch}..{t.num_epoch}, " if mode in TRAIN_MODES
                else f"batch {t.eval_batch_size}, ") + f"{t.precision}, seed {t.seed}")
    for note in dataset.notes:
        log.info(note)


def _new_file(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem_NNN.suffix` with the first free number: earlier results are never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while (folder / f"{stem}_{n:03d}{suffix}").exists():
        n += 1
    return folder / f"{stem}_{n:03d}{suffix}"


# ------------------------------------------------------------------------------------------------
# entry points

def _help(prog: str) -> str:
    lines = [f"usage: {prog} <command> [flags]      ({prog} <command> -h lists a command's flags)",
             f"       {prog} --mode MODE [flags]   (the published form)", "",
             "SPARD: stochastic human motion prediction by residual diffusion, 50 futures in one network evaluation.",
             "", "train and evaluate (the published modes):"]
    for s in STAGES.values():
        lines.append(f"  {s.mode:<13} train {s.title}")
    for s in STAGES.values():
        lines.append(f"  {s.eval_mode:<13} evaluate the {s.name} result with the {s.sampler} sampler (eight metrics)")
    lines += ["", "use trained models:"] + [f"  {name:<13} {text}" for name, text in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     this list", "  --version      the installed version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "spard", default_cfg: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv[:1] in (["-h"], ["--help"]) or (not argv and default_cfg is None):
            print(_help(prog))
        elif argv[:1] == ["--version"]:
            from . import __version__

            print(f"spard {__version__}")
        elif argv and argv[0] in COMMANDS:
            module = importlib.import_module(f"{__package__}.{argv[0]}")
            module.run(module.parser().parse_args(argv[1:]))
        elif argv and argv[0] in MODES:
            p = mode_parser(f"{prog} {argv[0]}", default_cfg, argv[0], _cfg_for_help(argv, default_cfg))
            run_mode(argv[0], p.parse_args(argv[1:]))
        elif not argv or argv[0].startswith("-"):
            args = mode_parser(prog, default_cfg, None, _cfg_for_help(argv, default_cfg)).parse_args(argv)
            run_mode(args.mode, args)
        else:
            raise UsageError(f"unknown command {argv[0]!r}; use one of {', '.join(MODES + tuple(COMMANDS))} "
                             f"(see `{prog} --help`)")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # -h/--help
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not isinstance(e, (ValueError, OSError)):  # not a checked input: name the kind, point at the traceback
            text = f"{type(e).__name__}: {text} (pass --debug for the traceback)" if text else type(e).__name__
        print(f"error: {text or type(e).__name__}", file=sys.stderr)
        return 2
    return 0


def _cfg_for_help(argv: list[str], default_cfg: str | None) -> str:
    """The preset whose values `-h` shows as defaults: `--cfg` when given (and valid), else the script's."""
    from .config import PRESETS

    given = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--cfg"]
    given += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--cfg=")]
    return next((name for name in given if name in PRESETS), default_cfg or "h36m")


def h36m_main() -> None:
    sys.exit(main(prog="h36m_main.py", default_cfg="h36m"))


def amass_main() -> None:
    sys.exit(main(prog="amass_main.py", default_cfg="amass"))


if __name__ == "__main__":
    sys.exit(main())
