"""One training loop for the three stages (docs/method.md section 4).

What differs between the stages (the loss, its draws, what trains and what is frozen) comes from
the table in `spard.stages`; this loop knows no stage by name.

Every random draw of a global batch (windows, jitter, rotation, t, noise, condition coin) comes from
one generator that all ranks share; under `torchrun` each rank then computes the loss of its slice,
so N processes train exactly like one process with the same global batch.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import distributed as dist
from .checkpoints import save_checkpoint, read_file, load_state
from .config import Config
from .data import TrainWindows
from .data.windows import Batch
from .data.dataset import Dataset
from .evaluate import METRIC_ORDER, evaluate, make_protocol
from .model import SPARD, to_model_space
from .nets.gcn import NodeBatchNorm
from .precision import autocast, uses_tf32
from .runs import RunError, read_history, result_path
from .samplers import SamplerOptions
from .stages import Stage, stage as stage_named
from .step_graph import StepGraph


class TrainingError(ValueError):
    """Training cannot go on (diverged, or no step possible); the message says what is kept and what to do."""


class StageLoss(nn.Module):
    """The stage's loss as a module, so data parallelism can wrap it: `forward(traj, **draws)`."""

    def __init__(self, stage: Stage, model: SPARD, teacher: SPARD | None, cfg: Config):
        super().__init__()
        self.stage, self.model, self.teacher, self.cfg = stage, model, teacher, cfg

    def forward(self, traj: torch.Tensor, **draws) -> torch.Tensor:
        return self.stage.loss(self.model, self.teacher, traj, self.cfg, draws)


def _rng_state(generator: torch.Generator) -> dict:
    """The training generator's state (the same on every rank) and torch's global states (dropout) of every
    rank, gathered (every rank calls this)."""
    own = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        own["cuda"] = torch.cuda.get_rng_state_all()
    return {"data": generator.get_state(), "ranks": dist.gather_objects(own)}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    """`_rng_state`'s states back, each rank its own (checkpoints of spard 0.1 hold rank 0's alone)."""
    generator.set_state(state["data"])
    ranks = state.get("ranks") or [state]
    own = ranks[dist.rank() % len(ranks)]
    torch.set_rng_state(own["torch"])
    if "cuda" in own and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(own["cuda"])


class Trainer:
    """Runs one stage: epochs of training, validation on held-out training clips, checkpoints."""

    def __init__(self, cfg: Config, stage: str, model: SPARD, dataset: Dataset, run_dir: Path | None,
                 out_dir: Path | None, device: torch.device, logger, resume_from: Path | None = None,
                 select: str = "best", progress: bool = True, fused_adam: bool = True, ddp_options: dict | None = None,
                 overwrite: bool = False):
        """`run_dir` None: nothing is written (benchmarks). `ddp_options`: extra keyword arguments of
        DistributedDataParallel under torchrun (e.g. `bucket_cap_mb`; `gradient_as_bucket_view` is on unless set False)."""
        device = torch.device(device)
        self.cfg, self.stage, self.model, self.dataset = cfg, stage_named(stage), model.to(device), dataset
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.out_dir, self.device, self.log = out_dir, device, logger
        self.select, self.progress, self.overwrite = select, progress, overwrite
        tc = cfg.train
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False) if self.stage.teacher else None
        params = self.stage.trainable(model)
        # --compile step-graph: the whole step as one CUDA graph, which reads the learning rate from a tensor
        self.graphed = tc.compile == "step-graph"
        if self.graphed and device.type != "cuda":
            raise ValueError(f"--compile step-graph needs a CUDA device, not {device}; use --compile default")
        self.optimizer = torch.optim.Adam(params, lr=self._lr(tc.lr), fused=fused_adam and device.type == "cuda",
                                          capturable=self.graphed)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(tc.milestones), gamma=tc.gamma)
        self.windows = TrainWindows(dataset.train, cfg.data.t_total, cfg.data.stride, cfg.data.aug,
                                    cfg.data.rota_prob, device=device)
        self.val_windows = to_model_space(torch.as_tensor(dataset.val_windows, dtype=torch.float32)).to(device)
        self.generator = torch.Generator(device=device).manual_seed(tc.seed)  # every draw of a batch, all ranks alike
        torch.manual_seed(tc.seed + 7919 * dist.rank())  # dropout: each rank its own masks, as one process has
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = uses_tf32(tc.precision)
        self.loss = StageLoss(self.stage, model, self.teacher, cfg)
        self.step_loss = self.loss
        if dist.world_size() > 1:
            for m in model.modules():
                if isinstance(m, NodeBatchNorm):
                    m.sync = True
            ids = [device.index] if device.type == "cuda" else None
            # gradients as views into DDP's buckets: no copy between them and the all-reduce
            options = {"gradient_as_bucket_view": True, **(ddp_options or {})}
            # built on a side stream when its backward is to be captured (PyTorch's CUDA-graph notes)
            with torch.cuda.stream(torch.cuda.Stream()) if self.graphed else contextlib.nullcontext():
                self.step_loss = nn.parallel.DistributedDataParallel(self.loss, device_ids=ids, broadcast_buffers=False,
                                                                     **options)
        if tc.compile != "none":
            self.step_loss = torch.compile(self.step_loss, mode="default" if self.graphed else tc.compile)
        self.step_graph = StepGraph(self._step) if self.graphed else None
        self.start_epoch, self.best = tc.start_epoch, math.inf
        if resume_from is not None:
            self._resume(resume_from)
        self.tb = None
        if dist.is_main() and self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"))
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    # -- one epoch ------------------------------------------------------------------------------
    def draws_for(self, batch: Batch) -> dict:
        """The stage's random inputs for `batch`: drawn for the whole global batch (every rank draws the
        same, keeping the generators in step), this rank's rows `[lo, hi)` kept."""
        n = batch.global_size
        draws = self.stage.draw(self.model, n, self.generator, self.cfg)
        return {k: v[batch.lo:batch.hi] if v.shape[0] == n else v for k, v in draws.items()}

    def train_step(self, poses: torch.Tensor, draws: dict, global_size: int) -> torch.Tensor:
        """One optimiser step on this rank's windows `[b, T, J+1, 3]` of a global batch; returns the loss."""
        # the slice's mean, weighted so that averaging over ranks gives the global batch mean
        scale = len(poses) * dist.world_size() / global_size
        if self.step_graph is not None:
            return self.step_graph(poses, draws, scale, capture=global_size == self.cfg.train.batch_size)
        return self._step(poses, draws, scale)

    def _step(self, poses: torch.Tensor, draws: dict, scale: float) -> torch.Tensor:
        """The step itself (what `--compile step-graph` captures): gradients start as None."""
        self.optimizer.zero_grad(set_to_none=True)
        traj = to_model_space(poses)  # [b, T, D]
        # autocast's weight cache would outlive a CUDA graph's capture: off when captured
        with autocast(self.cfg.train.precision, self.device.type, cache_enabled=not self.graphed):
            loss = self.step_loss(traj, **draws)
        (loss * scale).backward()
        self.optimizer.step()
        return loss.detach()

    def _lr(self, lr) -> float | torch.Tensor:
        """The learning rate as the optimizer holds it: a tensor for a captured step, else a float."""
        return torch.tensor(float(lr), device=self.device) if self.graphed else float(lr)

    def train_epoch(self, epoch: int) -> float:
        tc, world = self.cfg.train, dist.world_size()
        self.stage.train_modes(self.model)
        total, count = torch.zeros((), device=self.device), 0
        bar = tqdm(total=math.ceil(len(self.windows) / tc.batch_size), desc=f"{self.stage.name} epoch {epoch}",
                   unit="batch", leave=False, disable=not (self.progress and dist.is_main()))
        for batch in self.windows.batches(tc.batch_size, self.generator, rank=dist.rank(), world_size=world):
            n = batch.global_size
            draws = self.draws_for(batch)
            if n < max(2, world):  # BatchNorm needs 2 windows, each rank 1: skip, its draws taken all the same
                continue
            total += self.train_step(batch.poses, draws, n) * len(batch.poses)
            count += len(batch.poses)
            bar.update()
        bar.close()
        totals = dist.gather_objects((float(total), count))  # one host sync per epoch
        steps = sum(c for _, c in totals)
        if steps == 0:
            raise TrainingError(f"epoch {epoch} made no optimiser step: {len(self.windows)} training windows, batch "
                                f"size {tc.batch_size} (BatchNorm needs 2 windows a batch); lower --stride or give more data")
        self.scheduler.step()
        return sum(t for t, _ in totals) / steps

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The stage's loss on the validation windows, with fixed randomness (comparable across epochs).

        NaN without a validation split (`--val_fraction 0`): then the last epoch is the result.
        """
        if len(self.val_windows) == 0:
            return math.nan
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + 12345)
        total = 0.0
        for traj in self.val_windows.split(self.cfg.train.batch_size):
            draws = self.stage.draw(self.model, len(traj), gen, self.cfg)
            total += float(self.loss(traj, **draws)) * len(traj)
        return total / len(self.val_windows)

    # -- checkpoints ----------------------------------------------------------------------------
    def _save(self, path: Path, epoch: int, finished: bool = False, resumable: bool = True) -> None:
        """Write a checkpoint (rank 0); a resumable one carries optimizer, scheduler and RNG states."""
        rng = _rng_state(self.generator) if resumable else None  # gathered from every rank
        if dist.is_main():
            state = dict(optimizer=self.optimizer, scheduler=self.scheduler, rng=rng) if resumable else {}
            extra = {"finished": finished, "best_val_loss": self.best}
            if resumable:
                extra["data_sha256"] = self.dataset.training_sha256  # a resume checks that it sees the same data
            save_checkpoint(path, self.model, self.stage.name, epoch=epoch, **state, extra=extra)

    def _resume(self, path: Path) -> None:
        state = read_file(path, map_location="cpu")
        if state.get("stage") != self.stage.name:
            raise ValueError(f"--resume {path} is a '{state.get('stage')}' run, not '{self.stage.name}'")
        epoch, best = state.get("epoch"), state.get("best_val_loss")
        if not (type(epoch) is int and epoch >= 0 and type(best) in (int, float) and not math.isnan(best)):
            raise RunError(f"{path} is damaged (epoch {epoch!r}, best_val_loss {best!r}); resume from an intact "
                           f"copy or start a new run with --no_resume")
        load_state(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint of either kind resumes with either
            group["lr"] = self._lr(group["lr"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.generator)
        self.start_epoch, self.best = state["epoch"] + 1, state["best_val_loss"]
        history = self.run_dir / "history.jsonl"
        if dist.is_main() and history.is_file():  # epochs after the checkpoint run again
            kept = [r for r in read_history(history) if r["epoch"] <= state["epoch"]]
            history.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.log.info(f"resuming {self.run_dir} from epoch {state['epoch']} (pass --no_resume to start a new run)")

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> Path:
        tc = self.cfg.train
        if self.start_epoch == tc.start_epoch:
            self.log.info(f"training stage '{self.stage.name}': {len(self.windows)} windows per epoch, "
                          f"{sum(p.numel() for p in self.optimizer.param_groups[0]['params']):,} trainable parameters, "
                          f"epochs {tc.start_epoch}..{tc.num_epoch}, run folder {self.run_dir}")
        for epoch in range(self.start_epoch, tc.num_epoch + 1):
            start = time.time()
            train_loss = self.train_epoch(epoch)
            val_loss = self.validation_loss()
            broken = self.non_finite_weights()
            if broken or not math.isfinite(train_loss) or (len(self.val_windows) and not math.isfinite(val_loss)):
                kept = (f"its last good checkpoint stays in {self.run_dir} and is not made the stage result"
                        if self.run_dir is not None and (self.run_dir / "last.pt").is_file() else "nothing is saved")
                raise TrainingError(f"training diverged at epoch {epoch} (train loss {train_loss}, validation loss "
                                    f"{val_loss}" + (f", non-finite weights in {broken}" if broken else "") +
                                    f"): the run stops; {kept}; try a lower --lr, or check the data")
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.log.info(f"====> Epoch: {epoch} Time: {time.time() - start:.2f} Train Loss: {train_loss} "
                          f"Val Loss: {val_loss} lr: {lr:.5f}")
            record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                      "seconds": time.time() - start}
            if self.tb:
                self.tb.add_scalar("Loss/train", train_loss, epoch)
                self.tb.add_scalar("Loss/val", val_loss, epoch)
                self.tb.add_scalar("lr", lr, epoch)
            if tc.metrics_epoch and epoch % tc.metrics_epoch == 0 and len(self.val_windows):
                record["val_metrics"] = self.validation_metrics(epoch)
            if val_loss < self.best:
                self.best = val_loss
                self._save(self.run_dir / "best.pt", epoch, resumable=False)
            if tc.save_model_interval and epoch % tc.save_model_interval == 0:
                self._save(self.run_dir / f"ckpt_{epoch}.pt", epoch, resumable=False)
            if dist.is_main():  # before last.pt: a resume drops lines past its checkpoint
                with open(self.run_dir / "history.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            last = epoch == tc.num_epoch
            if last or epoch % max(tc.checkpoint_every, 1) == 0:
                self._save(self.run_dir / "last.pt", epoch, finished=last)
        return self.finish()

    def non_finite_weights(self) -> str:
        """The first parameter or buffer of the model holding NaN or inf ("" when all are finite): a loss can
        stay finite while the last step's update blows weights up."""
        for name, t in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
        return ""

    def validation_metrics(self, epoch: int) -> dict:
        """The eight metrics of the stage's sampler on the validation windows (logged, and in TensorBoard)."""
        protocol = make_protocol(self.dataset, self.cfg.data.t_his, self.cfg.data.multimodal_threshold,
                                 split="val", device=self.device)
        result = evaluate(self.model, protocol, SamplerOptions.from_config(self.cfg, self.stage.sampler),
                          batch_size=self.cfg.train.eval_batch_size, seed=self.cfg.train.seed, progress=False)
        shown = {k: v for k, v in result.items() if k in METRIC_ORDER and v is not None}
        self.log.info("validation " + " ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if self.tb:
            for k, v in shown.items():
                self.tb.add_scalar(f"val/{k}", v, epoch)
            self.tb.add_image("val/futures", self.picture(), epoch, dataformats="HWC")
        return {k: v for k, v in result.items() if k != "per_class"}

    def picture(self, window: int = 0, futures: int = 4):
        """One validation window's history, ground truth and `futures` futures of the stage's sampler, drawn
        (`uint8 [H, W, 3]`): what TensorBoard shows at each metrics epoch."""
        from .api import Predictor
        from .predictions import predict_windows
        from .render import render_picture

        p = predict_windows(Predictor(self.model, self.stage.name), self.dataset, [window], num_samples=futures,
                            split="val", seed=self.cfg.train.seed)
        return render_picture(p.history[0], p.futures[0], self.dataset.skeleton, truth=p.ground_truth[0],
                              title=f"{self.stage.sampler}: {p.names[0]}", fps=self.dataset.fps)

    def finish(self) -> Path:
        """Write the stage's result (the selected weights) where the next stage looks for it."""
        target = result_path(self.out_dir, self.stage.name)
        if dist.is_main() and target.exists() and not self.overwrite:
            raise RunError(f"{target} was written by another command while this run trained; this run's weights stay "
                           f"in {self.run_dir} (last.pt); pass --overwrite to let a run replace the result")
        if dist.is_main():
            source = self.run_dir / ("best.pt" if self.select == "best" and (self.run_dir / "best.pt").is_file() else "last.pt")
            state = read_file(source)
            state.pop("optimizer", None)
            state.pop("scheduler", None)
            state["run_dir"] = str(self.run_dir)
            state["selected"] = "best validation loss" if source.name == "best.pt" else "last epoch"
            from .checkpoints import atomic_save

            atomic_save(state, target)
            self.log.info(f"wrote {target} ({state['selected']}, epoch {state['epoch']})")
            if self.tb:
                self.tb.close()
        dist.barrier()
        return target
