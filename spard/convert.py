"""`spard convert`: published SPARD checkpoints to spard's, and back.

    spard convert --cfg h36m --num_heads 8 --ckpt published/train/ckpt.pt --out ours_base.pt
    spard convert --cfg h36m --num_heads 8 --ckpt published/distill/distill_ckpt.pt --np_ckpt published/np/np_ckpt.pt --out ours_np.pt
    spard convert --to_published --ckpt results/h36m/np/np_ckpt.pt --out spard.pt --np_out np.pt

Every size the state dicts determine is read from them (width, layers, DCT sizes, the refiner and
the noise predictor's shapes). What they cannot tell, the number of attention heads, must be given:
the published models use 8.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .arguments import Parser, UsageError, add_setting_flag
from .stages import STAGES


def parser() -> Parser:
    p = Parser(prog="spard convert", description=__doc__.split("\n\n")[0], replaces="existing output files")
    p.add_argument("--cfg", default=None, help="dataset preset of published weights: h36m or amass")
    p.add_argument("--ckpt", default="", help="input: a published SPARD state dict (or ours with --to_published)")
    p.add_argument("--np_ckpt", default="", help="input: a published noise-predictor state dict")
    p.add_argument("--stage", choices=tuple(STAGES), default=None,
                   help="stage recorded in our checkpoint (default: np with --np_ckpt, else base)")
    add_setting_flag(p, "denoiser.num_heads",
                     note="; not stored in published weights, so required (the published models use 8)")
    add_setting_flag(p, "noise_predictor.noise", default=0.0, shown="0, the published noise predictor",
                     note="; not stored in published weights: give our model's value when converting it back")
    p.add_argument("--to_published", action="store_true", help="write our checkpoint in the published layout")
    p.add_argument("--out", required=True, help="output file (with --to_published: the SPARD state dict)")
    p.add_argument("--np_out", default="", help="with --to_published: also write the noise predictor here")
    return p


def run(args) -> None:
    from . import checkpoints as ck
    from .config import preset

    heads, noise = getattr(args, "denoiser.num_heads"), getattr(args, "noise_predictor.noise")
    outputs = [Path(args.out)] + ([Path(args.np_out)] if args.np_out else [])
    if len({p.resolve() for p in outputs}) < len(outputs):
        raise UsageError(f"--out and --np_out name the same file {args.out}; give two different files")
    for out in outputs:
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    if args.to_published:
        if args.cfg or args.np_ckpt or heads is not None or args.stage or noise:
            raise UsageError("--to_published reads everything from our checkpoint: leave out --cfg, --np_ckpt, "
                             "--num_heads, --np_noise and --stage")
        model, _ = ck.load_model(args.ckpt)
        den, npr = ck.to_published(model)
        ck.atomic_save(den, args.out)
        if args.np_out:
            ck.atomic_save(npr, args.np_out)
        heads = model.cfg.denoiser.num_heads
        noise = model.cfg.noise_predictor.noise if args.np_out else 0.0  # only a written noise predictor has it
        back = f"--num_heads {heads}" + (f" --np_noise {noise:g}" if noise else "")
        note = (f"; its noise predictor adds noise (--np_noise {noise:g}), which the published code does not: "
                f"there it gives its K maps alone" if noise else "")
        print(f"wrote the published layout to {', '.join(map(str, outputs))} ({heads} attention heads: give "
              f"{back} when converting it back{note})")
        return
    if not args.cfg:
        raise UsageError("--cfg is required: the dataset preset of the weights (h36m or amass)")
    if heads is None:
        raise UsageError("--num_heads is required: published weights do not store the number of attention heads "
                         "(the published models use 8)")
    den = ck.read_file(args.ckpt) if args.ckpt else None
    npr = ck.read_file(args.np_ckpt) if args.np_ckpt else None
    if den is None and npr is None:
        raise UsageError("give --ckpt (published SPARD weights) and/or --np_ckpt (published noise predictor)")
    for obj, path, want in ((den, args.ckpt, "published-denoiser"), (npr, args.np_ckpt, "published-np")):
        if obj is not None and ck.kind_of(obj) != want:
            raise ck.CheckpointError(f"{path} is a {ck.kind_of(obj)} checkpoint, expected a {want} state dict")
    base = preset(args.cfg)
    if den is not None:
        base = ck.config_from_published(den, base)  # the sizes the weights have, so that checks name them
    base = dataclasses.replace(base, denoiser=dataclasses.replace(base.denoiser, num_heads=heads))
    model = ck.from_published(base, den, npr, np_noise=noise)
    stage = args.stage or ("np" if npr is not None else "base")
    ck.save_checkpoint(args.out, model, stage)
    print(f"wrote {args.out} (stage {stage}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{heads} attention heads)")
