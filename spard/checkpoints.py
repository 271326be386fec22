"""Checkpoints: our self-describing format, and the published layout in and out.

Ours is a plain dict saved with `torch.save` and read with `weights_only=True` (loading never runs
code): `format_version`, `stage`, `config`, `dataset` (signature), `model` (state dict of `SPARD`),
and, for resuming, `epoch`, `optimizer`, `scheduler`, `rng`. Writes are atomic (temporary file,
flush, fsync, rename), so an interruption leaves the previous file intact.

The published code saves raw state dicts: the SPARD model (`denoise_motion_transformer.*`) for the
base and distilled stages, the noise predictor (`model.*`) for stage 3. Our parameter names are the
same below those prefixes, so conversion is a prefix swap plus strict shape checks.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .config import Config
from .model import SPARD
from .stages import STAGES, holding
from .torch_files import UnreadableTorchFile, load_tensors

FORMAT_VERSION = 1
PUBLISHED_DENOISER_PREFIX = "denoise_motion_transformer."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# reading and writing files

def atomic_save(obj, path: str | Path) -> None:
    """`torch.save` to a temporary file beside `path`, flushed and fsynced, then renamed over it.

    On any failure (disk full, no permission, interrupted) the temporary file is removed and the
    previous `path`, if any, is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            message = f"cannot write {path} ({e.strerror or e}); {kept}: free disk space or choose another --out_dir"
            raise (OSError(e.errno, message) if e.errno else OSError(message)) from None
        raise


def read_file(path: str | Path, map_location="cpu"):
    """Load a checkpoint file without running code (`weights_only`), with one-line errors."""
    path = Path(path)
    if not str(path):
        raise CheckpointError("no checkpoint path given: pass the file written by the previous stage")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path, or run the stage that writes it first")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): use an intact copy or retrain")
    try:
        return load_tensors(path, map_location)
    except UnreadableTorchFile as e:
        if e.code:
            raise CheckpointError(f"checkpoint {path} holds {e.code}, not only tensors and plain data; "
                                  f"refusing to unpickle it (it could run code)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({e.detail}); use an intact copy or retrain") \
            from None


def dataset_signature(cfg: Config) -> dict:
    d = cfg.data
    return {"name": d.name, "num_joints": d.num_joints, "t_his": d.t_his, "t_pred": d.t_pred, "fps": d.fps}


def save_checkpoint(path, model: SPARD, stage: str, *, epoch: int = 0, optimizer=None, scheduler=None,
                    rng: dict | None = None, extra: dict | None = None) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    state = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "config": model.cfg.to_dict(),
        "dataset": dataset_signature(model.cfg),
        "model": model.state_dict(),
        "epoch": epoch,
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if rng is not None:
        state["rng"] = rng
    if extra:
        state.update(extra)
    atomic_save(state, path)


def is_ours(obj) -> bool:
    return isinstance(obj, dict) and "format_version" in obj


def kind_of(obj) -> str:
    """'ours', 'published-denoiser', 'published-np' or 'unknown'."""
    if is_ours(obj):
        return "ours"
    if isinstance(obj, dict) and any(str(k).startswith(PUBLISHED_DENOISER_PREFIX) for k in obj):
        return "published-denoiser"
    if isinstance(obj, dict) and "model.gc1.weight" in obj:
        return "published-np"
    return "unknown"


def check_compatible(ckpt: dict, cfg: Config, path, want_stages: tuple[str, ...]) -> None:
    """One-line errors when a checkpoint of ours does not fit the current setting."""
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {ckpt['format_version']}, newer than this spard "
                              f"({FORMAT_VERSION}); upgrade spard")
    stage = ckpt.get("stage")
    if stage not in want_stages:
        raise CheckpointError(f"{path} is a '{stage}' checkpoint but a {' or '.join(repr(s) for s in want_stages)} "
                              f"checkpoint is needed here")
    ours, theirs = dataset_signature(cfg), ckpt.get("dataset", {})
    for key in ("name", "num_joints", "t_his", "t_pred"):
        if theirs.get(key) != ours[key]:
            raise CheckpointError(f"{path} was trained with {key}={theirs.get(key)!r} but this run has "
                                  f"{key}={ours[key]!r}; use a checkpoint of this dataset/setting")


def load_model(path, cfg: Config | None = None, *, stages: tuple[str, ...] = tuple(STAGES), map_location="cpu") -> tuple[SPARD, dict]:
    """A model from a checkpoint of ours; its own config unless `cfg` is given (then checked against it)."""
    ckpt = read_file(path, map_location)
    if not is_ours(ckpt):
        raise CheckpointError(f"{path} is not a spard checkpoint ({kind_of(ckpt)}); published weights load "
                              f"with `spard convert` or the --ckpt/--distill_ckpt/--np_ckpt flags")
    missing = [key for key in ("stage", "config", "dataset", "model") if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is an incomplete spard checkpoint; "
                              f"use an intact copy or retrain")
    kinds = {"stage": str, "config": dict, "dataset": dict, "model": dict, "format_version": int}
    wrong = [key for key, kind in kinds.items() if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool)]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} is a {type(ckpt[wrong[0]]).__name__}, not a "
                              f"{kinds[wrong[0]].__name__}: the checkpoint is damaged; use an intact copy or retrain")
    try:
        saved = Config.from_dict(ckpt["config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} holds an unreadable config ({str(e).splitlines()[0][:160]}); "
                              f"was it written by another spard version?") from None
    check_compatible(ckpt, cfg or saved, path, stages)
    if cfg is not None:
        # the architecture is the checkpoint's; data and training settings are the caller's
        cfg = dataclasses.replace(cfg, denoiser=saved.denoiser, noise_predictor=saved.noise_predictor,
                                  diffusion=saved.diffusion)
    model = SPARD(cfg or saved)
    load_state(model, ckpt["model"], str(path))
    return model, ckpt


def load_state(module: nn.Module, state: dict, what: str) -> None:
    """Strict `load_state_dict` whose failure is one line naming the first offending key."""
    _check_tensors(state, what)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(f"{what}: keys do not match the model ({len(missing)} missing, {len(unexpected)} "
                              f"unexpected; {detail}); is it a checkpoint of this model and size?")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: {k} has shape {list(state[k].shape)}, expected {list(v.shape)}; "
                                  f"the checkpoint was made with other sizes (dataset joints, latent_dims, ...)")
    module.load_state_dict(state)


def _check_tensors(state, what: str) -> None:
    """One line unless `state` is a mapping of names to tensors."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: the weights are a {type(state).__name__}, not a state dict of tensors")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{what}: entry {str(bad)[:80]!r} is a {type(state[bad]).__name__}, not a tensor; "
                              f"the file is not a state dict of this model")


# ---------------------------------------------------------------------------------------------
# the published layout

def config_from_published(denoiser_state: dict, base: Config) -> Config:
    """`base` with the network sizes read off a published SPARD state dict.

    Shapes give D, latent width, FFN size, layers, n_pre, the refiner's DCT size and width; the
    number of heads and t_his are not in the weights and come from `base` (the dataset preset).
    """
    p = PUBLISHED_DENOISER_PREFIX
    _check_tensors(denoiser_state, "published SPARD weights")
    try:
        latent, d = denoiser_state[p + "joint_embed.weight"].shape
        n_pre = denoiser_state[p + "sequence_embedding"].shape[0]
        ff = denoiser_state[p + "temporal_decoder_blocks.0.ffn.linear1.weight"].shape[0]
        refine_n, gcn_hidden = denoiser_state[p + "gcn.gc1.weight"].shape
    except KeyError as e:
        raise CheckpointError(f"not a published SPARD state dict: key {e.args[0]!r} is missing") from None
    except (ValueError, IndexError):
        raise CheckpointError("not a published SPARD state dict: its embedding or refiner weights have the wrong "
                              "number of dimensions") from None
    layers = len({k.split(".")[2] for k in denoiser_state if k.startswith(p + "temporal_decoder_blocks.")})
    gcn_layers = len({k.split(".")[3] for k in denoiser_state if k.startswith(p + "gcn.gcbs.")})
    if d != base.data.dim:
        raise CheckpointError(f"the published weights are for D={d} ({d // 3} joints) but cfg "
                              f"'{base.data.name}' has D={base.data.dim}; pass the matching --cfg")
    den = dataclasses.replace(base.denoiser, latent_dim=latent, ff_size=ff, num_layers=layers, n_pre=n_pre,
                              refine_n_pre=None if refine_n == base.data.t_total else refine_n,
                              gcn_hidden=gcn_hidden, gcn_layers=gcn_layers)
    return dataclasses.replace(base, denoiser=den)


def noise_predictor_config_from_published(np_state: dict, base: Config, noise: float = 0.0) -> Config:
    _check_tensors(np_state, "published noise-predictor weights")
    try:
        n_pre, hidden = np_state["model.gc1.weight"].shape
        out = np_state["model.gc7.weight"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"not a published noise-predictor state dict: key {e.args[0]!r} is missing") from None
    except (ValueError, IndexError):
        raise CheckpointError("not a published noise-predictor state dict: its GCN weights have the wrong number of "
                              "dimensions") from None
    if n_pre < 1 or out % n_pre:
        raise CheckpointError(f"not a published noise-predictor state dict: {out} outputs are not K maps of "
                              f"{n_pre} coefficients")
    layers = len({k.split(".")[2] for k in np_state if k.startswith("model.gcbs.")})
    # the published weights hold no noise setting: theirs is none (K deterministic maps)
    npc = dataclasses.replace(base.noise_predictor, hidden=hidden, layers=layers, k=out // n_pre, noise=noise)
    return dataclasses.replace(base, noise_predictor=npc)


def from_published(base: Config, denoiser_state: dict | None = None, np_state: dict | None = None, *,
                   np_noise: float = 0.0) -> SPARD:
    """Our model from published state dicts (either may be None: that network keeps its init). The noise
    predictor adds `np_noise` x N(0, I) to its maps (0: the published noise predictor)."""
    cfg = base
    if denoiser_state is not None:
        cfg = config_from_published(denoiser_state, cfg)
    if np_state is not None:
        cfg = noise_predictor_config_from_published(np_state, cfg, np_noise)
    model = SPARD(cfg)
    if denoiser_state is not None:
        p = PUBLISHED_DENOISER_PREFIX
        load_state(model.denoiser, {k[len(p):]: v for k, v in denoiser_state.items()}, "published SPARD weights")
    if np_state is not None:
        load_state(model.noise_predictor, np_state, "published noise-predictor weights")
    return model


def to_published(model: SPARD) -> tuple[dict, dict]:
    """`(spard_state_dict, noise_predictor_state_dict)` in the published layout."""
    den = {PUBLISHED_DENOISER_PREFIX + k: v.detach().clone() for k, v in model.denoiser.state_dict().items()}
    npr = {k: v.detach().clone() for k, v in model.noise_predictor.state_dict().items()}
    return den, npr


# ---------------------------------------------------------------------------------------------
# the model a command needs, from our checkpoints or published state dicts

def load_stage_model(cfg: Config, need: str, paths: dict[str, str]) -> SPARD:
    """The result of stage `need` (or of a later stage, which holds it too), from the file its flag
    names: `paths` maps each stage to a path (empty: not given). Ours or published state dicts; a
    published noise predictor needs the distilled model beside it."""
    wanted = STAGES[need]

    def model_from(stage: str) -> SPARD:
        """A SPARD model (our checkpoint of `stage` or a later stage, or published SPARD weights)."""
        flag, path = STAGES[stage].ckpt_flag, paths.get(stage, "")
        if not path:
            raise CheckpointError(f"{flag} is required here: give the checkpoint written by --mode {STAGES[stage].mode}")
        obj = read_file(path)
        kind = kind_of(obj)
        if kind == "ours":
            return load_model(path, cfg, stages=holding(stage))[0]
        if kind == "published-denoiser":
            return from_published(cfg, obj)
        if kind == "published-np":
            raise CheckpointError(f"{path} holds only a noise predictor; {flag} needs a SPARD model checkpoint")
        raise CheckpointError(f"{path} is neither a spard checkpoint nor a published SPARD state dict")

    if wanted.trains != "noise_predictor":
        return model_from(need)
    path = paths.get(need, "")
    if not path:
        raise CheckpointError(f"{wanted.ckpt_flag} is required here: give the checkpoint written by --mode {wanted.mode}")
    obj = read_file(path)
    kind = kind_of(obj)
    if kind == "ours":
        model = load_model(path, cfg, stages=(need,))[0]
        if paths.get(wanted.previous.name):  # the distilled weights given explicitly win
            other = model_from(wanted.previous.name)
            load_state(model.denoiser, other.denoiser.state_dict(), paths[wanted.previous.name])
        return model
    if kind == "published-np":
        distilled = model_from(wanted.previous.name)
        full = SPARD(noise_predictor_config_from_published(obj, distilled.cfg))
        full.denoiser.load_state_dict(distilled.denoiser.state_dict())
        load_state(full.noise_predictor, obj, path)
        return full
    raise CheckpointError(f"{path} is a {kind} checkpoint, not a noise predictor (is it the base or distilled "
                          f"model? pass that one as --ckpt or --distill_ckpt)")
