"""The three training stages (docs/method.md section 4) as one table: everything that differs between them.

    stage    mode / eval mode       result                       sampler  trains (frozen inside)       loss
    base     train / eval           train/ckpt.pt                ddim     denoiser                     best of h
    distill  distill / distill_eval distill/distill_ckpt.pt      onestep  denoiser (its GCN refiner)   L1 to the teacher
    np       np / np_eval           np/np_ckpt.pt                np       noise_predictor              min over K

A stage starts from the previous stage's result (`--ckpt`, `--distill_ckpt`); the modules outside
what trains stay frozen in eval mode. The training loop (`spard.train`), the command line, the run
folders and the checkpoints all read this table; nothing else names a stage's parts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import losses
from .config import Config
from .model import SPARD


@dataclass(frozen=True)
class Stage:
    name: str  # base | distill | np
    title: str
    mode: str  # the command-line mode that trains it ...
    eval_mode: str  # ... and the one that evaluates its result
    folder: str  # <out_dir>/<folder>/ holds the result and the run folders
    ckpt: str  # the result's file name
    ckpt_flag: str  # the flag that names a result of this stage
    sampler: str  # the sampler its model is evaluated with
    trains: str  # the module of SPARD that trains
    frozen: tuple[str, ...]  # parts of that module that stay frozen
    draw: Callable[[SPARD, int, torch.Generator, Config], dict]  # the random inputs of a batch of n windows
    loss: Callable[[SPARD, SPARD | None, torch.Tensor, Config, dict], torch.Tensor]  # (model, teacher, traj, cfg, draws)
    teacher: bool = False  # the target comes from a frozen copy of the starting model
    fresh: bool = False  # what trains starts from its initialisation (settings from the run), not the previous result

    def trainable(self, model: SPARD) -> list[nn.Parameter]:
        """Set `requires_grad` for this stage and return the parameters that train."""
        model.requires_grad_(False)
        part = model.get_submodule(self.trains).requires_grad_(True)
        for name in self.frozen:
            part.get_submodule(name).requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]

    def train_modes(self, model: SPARD) -> None:
        """Training mode for what trains, eval mode (dropout off, BatchNorm frozen) for the rest."""
        model.eval()
        part = model.get_submodule(self.trains).train()
        for name in self.frozen:
            part.get_submodule(name).eval()

    def start(self, previous: SPARD | None, cfg: Config) -> SPARD:
        """The model this stage trains: a new one for the first stage; else the previous stage's result,
        with the module that trains built anew from the run's `cfg` when the stage starts it `fresh`."""
        if previous is None:
            return SPARD(cfg)
        if not self.fresh:
            return previous
        model = SPARD(dataclasses.replace(previous.cfg, **{self.trains: getattr(cfg, self.trains)}))
        for name, child in previous.named_children():
            if name != self.trains:
                model.get_submodule(name).load_state_dict(child.state_dict())
        return model.to(previous.sqrt_etas.device)

    @property
    def previous(self) -> "Stage | None":
        """The stage whose result this one starts from."""
        order = list(STAGES.values())
        i = order.index(self)
        return order[i - 1] if i else None


def _base(model, teacher, traj, cfg: Config, draws: dict) -> torch.Tensor:
    return losses.base_loss(model, traj, h=cfg.train.div_k, kind=cfg.train.loss, **draws)[0]


def _distill(model, teacher, traj, cfg: Config, draws: dict) -> torch.Tensor:
    return losses.distill_loss(model, teacher, traj, guidance=cfg.diffusion.guidance, kind=cfg.train.loss, **draws)[0]


def _noise_predictor(model, teacher, traj, cfg: Config, draws: dict) -> torch.Tensor:
    npc = cfg.noise_predictor
    return losses.noise_predictor_loss(model, traj, kind=cfg.train.loss, objective=npc.objective, relax=npc.relax,
                                       prior=npc.prior, **draws)[0]


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("base", "stage 1: base diffusion (best of h)", "train", "eval", "train", "ckpt.pt", "--ckpt", "ddim",
          "denoiser", (), losses.base_draws, _base, fresh=True),
    Stage("distill", "stage 2: distilled one-step", "distill", "distill_eval", "distill", "distill_ckpt.pt",
          "--distill_ckpt", "onestep", "denoiser", ("gcn",), losses.distill_draws, _distill, teacher=True),
    Stage("np", "stage 3: noise predictor (best of K)", "np", "np_eval", "np", "np_ckpt.pt", "--np_ckpt", "np",
          "noise_predictor", (), losses.noise_predictor_draws, _noise_predictor, fresh=True),
)}
TRAIN_MODES = {s.mode: s for s in STAGES.values()}
EVAL_MODES = {s.eval_mode: s for s in STAGES.values()}


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}") from None


def check_sampler(stage: str, sampler: str) -> None:
    """A one-line ValueError when `sampler` needs a network that a `stage` result does not hold trained:
    the network its own stage trains, if no stage up to `stage` trains it (np: the noise predictor).
    The baselines need no network."""
    own = next((s for s in STAGES.values() if s.sampler == sampler), None)
    order = list(STAGES)
    if own is not None and own.trains not in {STAGES[n].trains for n in order[:order.index(stage) + 1]}:
        raise ValueError(f"the {sampler} sampler needs a trained {own.trains}, which a '{stage}' result does not hold: "
                         f"give a result of stage '{own.name}' or later, or another sampler")


def holding(name: str) -> tuple[str, ...]:
    """The stages whose results hold the networks of stage `name` (or of the stage whose sampler `name`
    is): that stage and every later one."""
    order = list(STAGES)
    own = next((s.name for s in STAGES.values() if name in (s.name, s.sampler)), None)
    if own is None:
        raise ValueError(f"unknown stage or sampler {name!r}; expected one of {', '.join(order)} or its sampler")
    return tuple(order[order.index(own):])
