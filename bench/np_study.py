"""The noise predictor's objectives on one distilled model: train stage 3 under each, measure it on
the validation windows (to choose) and the test windows (to report), and look inside it.

    python bench/np_study.py --distill_ckpt results/cmu0/distill/distill_ckpt.pt --data_dir <cmu_h36m> \
        --variants published,relaxed,prior:0.01,noise:1 --epochs 10 --long published=10,30,100 --out np_seed0.json

A variant is `name[:value]` or several joined by `+`: `published` (min over K), `relaxed:eps`,
`prior:lambda`, `noise:sigma` (fresh N(0, sigma^2) noise added to every map, in training and
sampling), e.g. `prior:0.01+noise:1`. Every variant trains from the same initialisation and draws
(the seed) for `--epochs` epochs (a variant named in `--long` for those epochs instead), with
`--val_fraction` of the training clips held out: choose on `val`, never on `test`.

Diagnostics at the last epoch: how often each of the K maps wins (the best of K) over an epoch of
training windows; how far the maps lie from each other and from the origin, against K draws of
N(0, I) of the same size; the KL of their spread over K to N(0, 1); and the APD of the np futures
against the APD of onestep futures of the same distilled model.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from common import write
from spard import checkpoints, losses
from spard.data import load_dataset
from spard.evaluate import evaluate, make_protocol
from spard.model import to_model_space
from spard.runs import make_logger
from spard.samplers import SamplerOptions
from spard.stages import STAGES
from spard.train import Trainer

SETTINGS = {"published": None, "relaxed": "relax", "prior": "prior", "noise": "noise"}


def overrides(variant: str) -> dict:
    """`prior:0.01+noise:1` -> NoisePredictorConfig fields `{objective: prior, prior: 0.01, noise: 1.0}`."""
    out = {"objective": "published", "noise": 0.0}
    for part in variant.split("+"):
        name, _, value = part.partition(":")
        if name not in SETTINGS:
            raise SystemExit(f"unknown variant part {part!r}; use {', '.join(SETTINGS)}")
        if name in ("relaxed", "prior"):
            out["objective"] = name
        if SETTINGS[name] and value:
            out[SETTINGS[name]] = float(value)
        elif name == "noise":
            out["noise"] = 1.0
    return out


@torch.no_grad()
def diagnose(model, trainer: Trainer, protocol) -> dict:
    """Which maps win over an epoch of training windows, and the geometry of the maps on test windows."""
    model.eval()
    cfg = trainer.cfg
    k = cfg.noise_predictor.k
    wins = torch.zeros(k, dtype=torch.long)
    gen = torch.Generator(device=trainer.device).manual_seed(cfg.train.seed + 777)
    for batch in trainer.windows.batches(cfg.train.batch_size, gen):
        traj = to_model_space(batch.poses)  # [B, T, D]
        draws = losses.noise_predictor_draws(model, len(traj), gen, cfg)
        _, err, _ = losses.noise_predictor_loss(model, traj, **draws)
        wins += torch.bincount(err.argmin(dim=1).cpu(), minlength=k)
    history = protocol.windows[:, : model.t_his]
    maps = torch.cat([model.noise_predictor(model.condition(h)) for h in history.split(64)])  # [N, K, n, D]
    flat = maps.flatten(2).double()  # [N, K, m]
    m = flat.shape[-1]
    pair = torch.cdist(flat, flat)  # [N, K, K]
    i, j = torch.triu_indices(k, k, offset=1)
    gauss = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gauss_pair = torch.cdist(gauss, gauss)[:, i, j]
    return {
        "wins": wins.tolist(), "maps_that_win": int((wins > 0).sum()), "top_map_share": float(wins.max() / wins.sum()),
        "pairwise_distance": float(pair[:, i, j].mean()), "gaussian_pairwise_distance": float(gauss_pair.mean()),
        "map_norm": float(flat.norm(dim=-1).mean()), "gaussian_norm": float(gauss.norm(dim=-1).mean()),
        "expected_gaussian_norm": math.sqrt(m), "std_over_k": float(flat.std(dim=1).mean()),
        "spread_kl": float(losses.spread_prior(maps.double())),
    }


def measure(model, protocols: dict, options: SamplerOptions, seed: int) -> dict:
    return {split: evaluate(model, p, options, batch_size=64, seed=seed, progress=False) for split, p in protocols.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distill_ckpt", required=True, help="a stage-2 result (or any later one)")
    p.add_argument("--data_dir", default=None, help="the dataset, if not where the checkpoint was trained")
    p.add_argument("--variants", default="published,relaxed,prior,noise")
    p.add_argument("--epochs", default="10", help="epochs at which each variant is measured (the last: its length)")
    p.add_argument("--long", default="", help="variant=epochs,epochs,...[;variant=...]: measured at these epochs instead")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="tf32")
    p.add_argument("--lr", type=float, default=None, help="the np stage's learning rate (default: the checkpoint's)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    distilled, _ = checkpoints.load_model(args.distill_ckpt, stages=("distill", "np"))
    cfg = distilled.cfg
    data = dataclasses.replace(cfg.data, val_fraction=args.val_fraction, **({"data_dir": args.data_dir} if args.data_dir else {}))
    train = dataclasses.replace(cfg.train, seed=args.seed, precision=args.precision, metrics_epoch=0, milestones=(10_000,),
                                **({"lr": args.lr} if args.lr else {}))
    cfg = dataclasses.replace(cfg, data=data, train=train)
    dataset = load_dataset(cfg.data)
    protocols = {split: make_protocol(dataset, cfg.data.t_his, cfg.data.multimodal_threshold, split=split, device=device)
                 for split in ("val", "test")}
    distilled = distilled.to(device)
    report = {"distill_ckpt": args.distill_ckpt, "seed": args.seed, "val_fraction": args.val_fraction,
              "precision": args.precision, "lr": cfg.train.lr, "train_windows_per_epoch": None, "variants": {},
              "onestep": measure(distilled, protocols, SamplerOptions("onestep", cfg.train.num_samples), args.seed)}
    long = dict(item.split("=", 1) for item in args.long.split(";") if item)
    log = make_logger(None, quiet=True)
    for variant in args.variants.split(","):
        epochs = [int(e) for e in long.get(variant, args.epochs).split(",")]
        npc = dataclasses.replace(cfg.noise_predictor, **overrides(variant))
        run_cfg = dataclasses.replace(cfg, noise_predictor=npc, train=dataclasses.replace(cfg.train, num_epoch=max(epochs)))
        torch.manual_seed(args.seed)  # the same initial predictor for every variant
        model = STAGES["np"].start(distilled, run_cfg).to(device)
        trainer = Trainer(run_cfg, "np", model, dataset, None, None, device, log, progress=False)
        report["train_windows_per_epoch"] = len(trainer.windows)
        row, started = {"noise_predictor": dataclasses.asdict(npc), "epochs": {}}, time.time()
        report["variants"][variant] = row
        for epoch in range(1, max(epochs) + 1):
            loss = trainer.train_epoch(epoch)
            if epoch in epochs:
                row["epochs"][epoch] = {"train_loss": loss, **measure(
                    model, protocols, SamplerOptions("np", cfg.train.num_samples), args.seed)}
                t = row["epochs"][epoch]["test"]
                print(f"{variant} epoch {epoch}: test APD {t['APD']:.3f} ADE {t['ADE']:.4f} FDE {t['FDE']:.4f}", flush=True)
                write("np_study", report, args.out)  # each measurement kept as it comes
        row["seconds"] = time.time() - started
        row["diagnostics"] = diagnose(model, trainer, protocols["test"])
        print(variant, row["diagnostics"], flush=True)
        write("np_study", report, args.out)


if __name__ == "__main__":
    main()
