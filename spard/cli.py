"""Command line: the published flag set (`h36m_main.py`, `amass_main.py`) and the `spard` command.

    spard train|distill|np|eval|distill_eval|np_eval [flags]   the six modes
    spard --mode train --cfg h36m ...                            the same, in the published form
    spard convert ...                                            published checkpoints in and out
    spard demo | render | export                                 see `spard <command> -h`

Flags keep the published names and defaults (formats.md section 5.2); defaults come from the
chosen `--cfg` preset, so `--cfg amass` gets AMASS's stride, threshold and sizes whatever the
script. Errors are one line on stderr with exit status 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import time
from pathlib import Path

MODES = ("train", "distill", "np", "eval", "distill_eval", "np_eval")
MODE_STAGE = {"train": "base", "distill": "distill", "np": "np"}
MODE_SAMPLER = {"train": "ddim", "distill": "onestep", "np": "np", "eval": "ddim", "distill_eval": "onestep",
                "np_eval": "np"}

# flag -> (config section, field); every one defaults to None = "the preset's value"
CONFIG_FLAGS = {
    "data_dir": ("data", "data_dir"), "augmentation": ("data", "aug"), "stride": ("data", "stride"),
    "rota_prob": ("data", "rota_prob"), "multimodal_threshold": ("data", "multimodal_threshold"),
    "t_his": ("data", "t_his"), "t_pred": ("data", "t_pred"), "val_fraction": ("data", "val_fraction"),
    "segments": ("data", "segments_csv"), "mmapd": ("data", "mmapd_csv"), "classes": ("data", "classes_json"),
    "fid_classifier": ("data", "fid_classifier"),
    "scheduler": ("diffusion", "schedule"), "noise_steps": ("diffusion", "noise_steps"),
    "sample_steps": ("diffusion", "sample_steps"), "etas_min": ("diffusion", "eta_min"),
    "etas_max": ("diffusion", "eta_end"), "kappa": ("diffusion", "kappa"), "power": ("diffusion", "power"),
    "n_pre": ("denoiser", "n_pre"), "refine_n_pre": ("denoiser", "refine_n_pre"), "padding": ("denoiser", "padding"),
    "num_layers": ("denoiser", "num_layers"), "num_heads": ("denoiser", "num_heads"),
    "latent_dims": ("denoiser", "latent_dim"), "ff_size": ("denoiser", "ff_size"), "dropout": ("denoiser", "dropout"),
    "gcn_linear_size": ("denoiser", "gcn_hidden"), "gcn_dropout": ("denoiser", "gcn_dropout"),
    "gcn_layers": ("denoiser", "gcn_layers"),
    "np_gcn_linear_size": ("noise_predictor", "hidden"), "np_gcn_dropout": ("noise_predictor", "dropout"),
    "np_gcn_layers": ("noise_predictor", "layers"), "np_alpha": ("noise_predictor", "alpha"),
    "np_k": ("noise_predictor", "k"),
    "batch_size": ("train", "batch_size"), "num_epoch": ("train", "num_epoch"), "start_epoch": ("train", "start_epoch"),
    "lr": ("train", "lr"), "milestone": ("train", "milestones"), "gamma": ("train", "gamma"),
    "div_k": ("train", "div_k"), "mod_train": ("train", "mod_train"), "mod_test": ("train", "mod_test"),
    "per_sample_dropout": ("train", "per_sample_dropout"), "loss": ("train", "loss"), "seed": ("train", "seed"),
    "num_samples": ("train", "num_samples"), "eval_batch_size": ("train", "eval_batch_size"),
    "metrics_epoch": ("train", "metrics_epoch"), "save_model_interval": ("train", "save_model_interval"),
    "checkpoint_every": ("train", "checkpoint_every"), "amp": ("train", "amp"), "tf32": ("train", "tf32"),
    "compile": ("train", "compile"),
}


class UsageError(ValueError):
    """Bad command-line input."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace("[", "").replace("]", "").replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 100,200,300, got {text!r}") from None


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        raise UsageError(f"{message} (see `{self.prog} -h`)")


def add_run_flags(p: argparse.ArgumentParser, default_cfg: str | None) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--cfg", default=default_cfg, help="preset: h36m, amass or deepmimic")
    g.add_argument("--device", default="cuda:0", help="torch device; falls back to cpu without CUDA")
    g.add_argument("--out_dir", default=None, help="results folder (default results/<cfg>)")
    g.add_argument("--resume", nargs="?", const=True, default=True,
                   help="resume an unfinished run (default), or the given run folder / last.pt")
    g.add_argument("--no_resume", dest="resume", action="store_false", help="always start a new run")
    g.add_argument("--overwrite", action="store_true", help="allow replacing an existing stage result")
    g.add_argument("--select", choices=("best", "last"), default="best",
                   help="weights written as the stage result: best validation loss or last epoch")
    g.add_argument("--sample", choices=("ddim", "onestep", "np", "zero_velocity", "constant_velocity"), default=None,
                   help="sampler for evaluation (default: the mode's own: ddim, onestep or np); the two "
                        "baselines need no checkpoint")
    g.add_argument("--ckpt", "--model_ckpt", dest="ckpt", default="", help="base (stage-1) checkpoint")
    g.add_argument("--distill_ckpt", default="", help="distilled (stage-2) checkpoint")
    g.add_argument("--np_ckpt", default="", help="noise-predictor (stage-3) checkpoint")
    g.add_argument("--use_condition", type=_bool, default=True, help="condition on in onestep/np sampling")
    g.add_argument("--json", default=None, help="evaluation: write the metrics here (default under out_dir/eval)")
    g.add_argument("--no_progress", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    g.add_argument("--objective", choices=("x0",), default="x0", help="network target (the published code: x0 only)")

    c = p.add_argument_group("configuration (defaults: the --cfg preset)")
    typed = {
        "data_dir": str, "augmentation": int, "stride": _positive(int), "rota_prob": _fraction,
        "multimodal_threshold": _positive(float), "t_his": _positive(int), "t_pred": _positive(int),
        "val_fraction": _fraction, "segments": str, "mmapd": str, "classes": str, "fid_classifier": str,
        "scheduler": str, "noise_steps": _positive(int), "sample_steps": _positive(int), "etas_min": _positive(float),
        "etas_max": _positive(float), "kappa": _positive(float), "power": _positive(float), "n_pre": _positive(int),
        "refine_n_pre": _positive(int), "padding": str, "num_layers": _positive(int), "num_heads": _positive(int),
        "latent_dims": _positive(int), "ff_size": _positive(int), "dropout": _fraction, "gcn_linear_size": _positive(int),
        "gcn_dropout": _fraction, "gcn_layers": int, "np_gcn_linear_size": _positive(int), "np_gcn_dropout": _fraction,
        "np_gcn_layers": int, "np_alpha": _positive(float), "np_k": _positive(int), "batch_size": _positive(int),
        "num_epoch": _positive(int), "start_epoch": _positive(int), "lr": _positive(float), "milestone": _int_list,
        "gamma": _positive(float), "div_k": _positive(int), "mod_train": _fraction, "mod_test": float,
        "per_sample_dropout": _bool, "loss": str, "seed": int, "num_samples": _positive(int),
        "eval_batch_size": _positive(int), "metrics_epoch": int, "save_model_interval": int,
        "checkpoint_every": _positive(int), "amp": str, "tf32": _bool, "compile": str,
    }
    aliases = {"augmentation": ["--augumentation", "--aug"], "mod_test": ["--mode_test"], "np_k": ["--k"]}
    for name, kind in typed.items():
        c.add_argument(f"--{name}", *aliases.get(name, []), dest=name, type=kind, default=None)


def build_config(args):
    """The preset named by `--cfg`, with every flag the user gave written over it, checked."""
    from .config import preset

    if args.cfg is None:
        raise UsageError("no --cfg given: choose h36m, amass or deepmimic")
    cfg = preset(args.cfg)
    sections = {name: {} for name in ("data", "denoiser", "noise_predictor", "diffusion", "train")}
    for flag, (section, field) in CONFIG_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            sections[section][field] = value
    cfg = dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items() if v})
    refine_given = getattr(args, "refine_n_pre", None) is not None
    if not refine_given:  # the refiner spans the whole window unless told otherwise
        cfg = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, refine_n_pre=cfg.data.t_total))
    cfg = cfg.synced()
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Values argparse cannot check alone; each failure is one line naming the flag."""
    d, t, s, den = cfg.data, cfg.train, cfg.diffusion, cfg.denoiser
    checks = [
        (d.aug >= 0, f"--augmentation must be >= 0, got {d.aug}"),
        (0.0 <= t.mod_test <= 1.0, f"--mode_test (guidance weight, an interpolation) must be in [0, 1], got {t.mod_test}"),
        (t.loss in ("mae", "mse"), f"--loss must be mae or mse, got {t.loss!r}"),
        (t.amp in ("none", "bf16"), f"--amp must be none or bf16, got {t.amp!r}"),
        (t.compile in ("none", "default", "reduce-overhead", "step-graph"),
         f"--compile must be none, default, reduce-overhead or step-graph, got {t.compile!r}"),
        (s.schedule in ("exponential", "linear"), f"--scheduler must be exponential or linear, got {s.schedule!r}"),
        (s.noise_steps >= 2, f"--noise_steps must be >= 2, got {s.noise_steps}"),
        (1 <= s.sample_steps <= s.noise_steps, f"--sample_steps must be in [1, noise_steps={s.noise_steps}], got {s.sample_steps}"),
        (den.padding in ("LastFrame", "Repeat"), f"--padding must be LastFrame or Repeat, got {den.padding!r}"),
        (den.n_pre <= d.t_total, f"--n_pre ({den.n_pre}) cannot exceed t_his + t_pred ({d.t_total})"),
        (den.latent_dim % den.num_heads == 0, f"--latent_dims ({den.latent_dim}) must be divisible by --num_heads ({den.num_heads})"),
        (t.metrics_epoch >= 0 and t.save_model_interval >= 0, "--metrics_epoch and --save_model_interval must be >= 0"),
        (t.num_epoch >= t.start_epoch, f"--num_epoch ({t.num_epoch}) is before --start_epoch ({t.start_epoch})"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str):
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        print(f"CUDA is not available: using the CPU instead of {name}", file=sys.stderr)
        return "cpu"
    try:
        torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a torch device; use e.g. cuda:0 or cpu") from None
    return name


# ------------------------------------------------------------------------------------------------
# loading models for the modes

def load_stage_model(cfg, args, need: str):
    """The model a mode starts from: `need` is 'base' (--ckpt), 'distill' (--distill_ckpt) or 'np'."""
    from . import checkpoints as ck

    def load(path: str, stages: tuple[str, ...], flag: str):
        if not path:
            raise UsageError(f"{flag} is required here: give the checkpoint written by the previous stage")
        obj = ck.read_file(path)
        kind = ck.kind_of(obj)
        if kind == "ours":
            return ck.load_model(path, cfg, stages=stages)[0]
        if kind == "published-denoiser":
            return ck.from_published(cfg, obj)
        if kind == "published-np":
            raise ck.CheckpointError(f"{path} holds only a noise predictor; {flag} needs a SPARD model checkpoint")
        raise ck.CheckpointError(f"{path} is neither a spard checkpoint nor a published SPARD state dict")

    if need == "base":
        return load(args.ckpt, ("base", "distill", "np"), "--ckpt")
    if need == "distill":
        return load(args.distill_ckpt, ("distill", "np"), "--distill_ckpt")
    # np: our np checkpoint holds both networks; a published one needs the distilled model too
    if not args.np_ckpt:
        raise UsageError("--np_ckpt is required here: give the checkpoint written by --mode np")
    obj = ck.read_file(args.np_ckpt)
    kind = ck.kind_of(obj)
    if kind == "ours":
        model = ck.load_model(args.np_ckpt, cfg, stages=("np",))[0]
        if args.distill_ckpt:  # the distilled weights given explicitly win
            other = load(args.distill_ckpt, ("distill", "np"), "--distill_ckpt")
            ck.load_state(model.denoiser, other.denoiser.state_dict(), args.distill_ckpt)
        return model
    if kind == "published-np":
        model = load(args.distill_ckpt, ("distill", "np"), "--distill_ckpt")
        cfg2 = ck.noise_predictor_config_from_published(obj, model.cfg)
        from .model import SPARD

        full = SPARD(cfg2)
        full.denoiser.load_state_dict(model.denoiser.state_dict())
        ck.load_state(full.noise_predictor, obj, args.np_ckpt)
        return full
    raise ck.CheckpointError(f"{args.np_ckpt} is a {kind} checkpoint, not a noise predictor (is it the base or "
                             f"distilled model? pass that one as --ckpt or --distill_ckpt)")


def run_mode(mode: str, args) -> dict | None:
    import torch

    from . import distributed as dist
    from .data import load_dataset
    from .evaluate import evaluate, format_metrics, make_protocol
    from .metrics import load_fid_classifier
    from .runs import check_writable, make_folder, make_logger, open_run

    cfg = build_config(args)
    sampler = args.sample or MODE_SAMPLER[mode]
    if mode not in MODE_STAGE and sampler == "np" and mode != "np_eval":
        raise UsageError("--sample np needs the noise predictor: use --mode np_eval with --np_ckpt")
    device = dist.setup(resolve_device(args.device))
    seed_everything(cfg.train.seed)
    out_dir = Path(args.out_dir) if args.out_dir else Path("results") / args.cfg

    # everything that can fail on bad input is checked before any file is created or written
    if mode in MODE_STAGE:
        run_dir, resume_from = open_run(out_dir, MODE_STAGE[mode], resume=args.resume, overwrite=args.overwrite) \
            if dist.is_main() else (None, None)
        run_dir, resume_from = dist.broadcast_object((run_dir, resume_from))
    else:
        check_writable(out_dir / "eval")
        if args.json:
            check_writable(Path(args.json).absolute().parent)
            if Path(args.json).exists() and not args.overwrite:
                raise UsageError(f"--json {args.json} already exists; pass --overwrite to replace it, or another path")

    dataset = load_dataset(cfg.data)
    baseline = mode not in MODE_STAGE and args.sample in ("zero_velocity", "constant_velocity")
    if mode == "train" or baseline:
        from .model import SPARD
        model = SPARD(cfg)
    elif mode == "distill":
        model = load_stage_model(cfg, args, "base")
    elif mode == "np":
        model = load_stage_model(cfg, args, "distill")
    else:
        model = load_stage_model(cfg, args, {"eval": "base", "distill_eval": "distill", "np_eval": "np"}[mode])
    model = model.to(device)

    if mode in MODE_STAGE:
        from .train import Trainer
        created = make_folder(run_dir) if dist.is_main() else None
        log = make_logger(run_dir if dist.is_main() else None, quiet=not dist.is_main())
        try:
            _log_start(log, mode, cfg, dataset)
            trainer = Trainer(model.cfg, MODE_STAGE[mode], model, dataset, run_dir, out_dir, torch.device(device), log,
                              resume_from=resume_from, select=args.select, progress=not args.no_progress)
        except BaseException:  # a run that could not start leaves no folder behind
            for handler in log.handlers:
                handler.close()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        result_file = trainer.fit()
        log.info(f"stage result: {result_file}")
        dist.teardown()
        return None

    log = make_logger(None, quiet=not dist.is_main())
    _log_start(log, mode, cfg, dataset)
    if baseline:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_samples=1))
    classifier = load_fid_classifier(cfg.data.fid_classifier, device) if cfg.data.fid_classifier else None
    protocol = make_protocol(dataset, cfg.data.t_his, cfg.data.multimodal_threshold, fid_classifier=classifier,
                             device=device)
    options = {"guidance": cfg.train.mod_test} if sampler == "ddim" else {"use_condition": args.use_condition}
    started = time.time()
    result = evaluate(model, protocol, sampler, num_samples=cfg.train.num_samples, batch_size=cfg.train.eval_batch_size,
                      seed=cfg.train.seed, progress=not args.no_progress, **options)
    if dist.is_main():
        log.info(format_metrics(result))
        record = {"mode": mode, "sampler": sampler, "windows": len(protocol), "num_samples": cfg.train.num_samples,
                  "seconds": time.time() - started, "metrics": result, "config": cfg.to_dict(),
                  "checkpoints": {"ckpt": args.ckpt, "distill_ckpt": args.distill_ckpt, "np_ckpt": args.np_ckpt}}
        path = Path(args.json) if args.json else _new_file(out_dir / "eval", f"{mode}_{sampler}", ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        log.info(f"metrics written to {path}")
    dist.teardown()
    return result


def _log_start(log, mode: str, cfg, dataset) -> None:
    log.info("=" * 80)
    log.info(json.dumps({"mode": mode, **cfg.to_dict()}))
    log.info("=" * 80)
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

def mode_parser(prog: str, default_cfg: str | None, mode: str | None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="SPARD: train, distill, noise predictor, and their evaluations")
    if mode is None:
        p.add_argument("--mode", choices=MODES, default="np_eval", help="what to run (published default np_eval)")
    add_run_flags(p, default_cfg)
    return p


def convert_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="spard convert", description="Published SPARD checkpoints to ours, and back")
    p.add_argument("--cfg", required=True, help="dataset preset of the weights: h36m or amass")
    p.add_argument("--ckpt", default="", help="input: a published SPARD state dict (or ours with --to_published)")
    p.add_argument("--np_ckpt", default="", help="input: a published noise-predictor state dict")
    p.add_argument("--stage", choices=("base", "distill", "np"), default=None,
                   help="stage recorded in our checkpoint (default: np with --np_ckpt, else base)")
    p.add_argument("--num_heads", type=_positive(int), default=None, help="heads (not stored in the weights)")
    p.add_argument("--to_published", action="store_true", help="write our checkpoint in the published layout")
    p.add_argument("--out", required=True, help="output file (with --to_published: the SPARD state dict)")
    p.add_argument("--np_out", default="", help="with --to_published: also write the noise predictor here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--debug", action="store_true")
    return p


def run_convert(args) -> None:
    from . import checkpoints as ck
    from .config import preset

    outputs = [Path(args.out)] + ([Path(args.np_out)] if args.np_out else [])
    for out in outputs:
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    if args.to_published:
        model, _ = ck.load_model(args.ckpt)
        den, npr = ck.to_published(model)
        ck.atomic_save(den, args.out)
        if args.np_out:
            ck.atomic_save(npr, args.np_out)
        print(f"wrote the published layout to {', '.join(map(str, outputs))}")
        return
    base = preset(args.cfg)
    if args.num_heads:
        base = dataclasses.replace(base, denoiser=dataclasses.replace(base.denoiser, num_heads=args.num_heads))
    den = ck.read_file(args.ckpt) if args.ckpt else None
    npr = ck.read_file(args.np_ckpt) if args.np_ckpt else None
    if den is None and npr is None:
        raise UsageError("give --ckpt (published SPARD weights) and/or --np_ckpt (published noise predictor)")
    for obj, path, want in ((den, args.ckpt, "published-denoiser"), (npr, args.np_ckpt, "published-np")):
        if obj is not None and ck.kind_of(obj) != want:
            raise ck.CheckpointError(f"{path} is a {ck.kind_of(obj)} checkpoint, expected a {want} state dict")
    model = ck.from_published(base, den, npr)
    stage = args.stage or ("np" if npr is not None else "base")
    ck.save_checkpoint(args.out, model, stage)
    print(f"wrote {args.out} (stage {stage}, {sum(p.numel() for p in model.parameters()):,} parameters)")


COMMANDS = {"convert": (convert_parser, run_convert)}


def _extra_command(name: str):
    """`(parser, run)` of a command that lives in its own module (imported only when used)."""
    import importlib

    module = importlib.import_module(f"{__package__}.{name}")
    return module.parser, module.run


def main(argv: list[str] | None = None, prog: str = "spard", default_cfg: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] in MODES:
            args = mode_parser(f"{prog} {argv[0]}", default_cfg, argv[0]).parse_args(argv[1:])
            run_mode(argv[0], args)
        elif argv and argv[0] in COMMANDS:
            make, run = COMMANDS[argv[0]]
            run(make().parse_args(argv[1:]))
        elif argv and argv[0] in ("demo", "render", "export", "view"):
            make, run = _extra_command(argv[0])
            run(make().parse_args(argv[1:]))
        elif not argv or argv[0].startswith("-"):
            args = mode_parser(prog, default_cfg, None).parse_args(argv)
            run_mode(args.mode, args)
        else:
            raise UsageError(f"unknown command {argv[0]!r}; use one of {', '.join(MODES + tuple(COMMANDS))}, "
                             f"demo, render, export, or --mode")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # -h/--help
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        if isinstance(e, (ValueError, OSError)):
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {message}", file=sys.stderr)
            return 2
        raise
    return 0


def h36m_main() -> None:
    sys.exit(main(prog="h36m_main.py", default_cfg="h36m"))


def amass_main() -> None:
    sys.exit(main(prog="amass_main.py", default_cfg="amass"))


if __name__ == "__main__":
    sys.exit(main())
