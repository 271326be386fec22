"""ONNX export of the two single-evaluation predictors (`spard export`), checked with onnxruntime.

    np       history [B, t_his, D]                          -> trajectories [B, K, T, D]
             noise predictor + one denoiser evaluation: no randomness, no noise input
    onestep  history [B, t_his, D], noise [S, B, n_pre, D]  -> trajectories [B, S, T, D]
             one evaluation of the distilled denoiser; the caller draws the standard normal noise

Model space as everywhere (`spard.model`): D = 3J, root dropped. The outputs are whole trajectories
as the samplers give them (`[:, :, t_his:]` are the futures). The graphs are traced from the
samplers themselves (`spard.samplers`), so they compute the same function; the batch B (and for
onestep the sample count S) are dynamic axes. The TorchScript-based exporter (`dynamo=False`) is
used: it needs no onnxscript and handles every op of the model (scaled-dot-product attention
included) from opset 17 on.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
import dataclasses
from pathlib import Path

import torch
from torch import nn

from .arguments import Parser
from .model import SPARD
from .runs import find_checkpoint
from .samplers import SamplerOptions, draws_noise
from .stages import check_sampler

MIN_OPSET = 17


class ExportError(ValueError):
    """An export that cannot be done or did not verify; the message says why."""


class SamplerGraph(nn.Module):
    """A sampler of `model` as a module, sampling with the run's settings (`SamplerOptions.from_config`):
    `history [B, t_his, D]` -> `[B, K, T, D]` for the published np predictor; samplers that draw noise
    take it as an input, `[S, B, n_pre, D]` -> `[B, S, T, D]` (`inputs`)."""

    def __init__(self, model: SPARD, sampler: str):
        super().__init__()
        self.model, self.options = model, SamplerOptions.from_config(model.cfg, sampler)
        self.inputs = inputs_of(model, sampler)

    def forward(self, history: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        s = self.model.noise_predictor.cfg.k if noise is None else noise.shape[0]
        return dataclasses.replace(self.options, num_samples=s).sample(self.model, history, noise=noise)


OUTPUT = "trajectories"


def inputs_of(model: SPARD, sampler: str) -> tuple[str, ...]:
    """The graph's inputs: `("history",)`, or `("history", "noise")` for a sampler that draws noise."""
    return ("history", "noise") if draws_noise(model, sampler) else ("history",)


def example_inputs(model: SPARD, sampler: str, batch: int, samples: int, generator: torch.Generator) -> tuple:
    """Random inputs of a predictor: `(history,)` or `(history, noise)`."""
    d = model.dim
    history = 0.5 * torch.randn(batch, model.t_his, d, generator=generator)  # [B, t_his, D], metres
    if "noise" not in inputs_of(model, sampler):
        return (history,)
    return history, torch.randn(samples, batch, model.n_pre, d, generator=generator)  # [S, B, n_pre, D]


def export_onnx(model: SPARD, sampler: str, path: str | Path, *, opset: int = MIN_OPSET) -> Path:
    """Trace the `sampler` predictor of `model` (a float32 CPU model) into an ONNX file at `path`."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = SamplerGraph(model, sampler).eval()
    dynamic = {"history": {0: "batch"}, "noise": {0: "samples", 1: "batch"}, OUTPUT: {0: "batch", 1: "samples"}}
    if "noise" not in graph.inputs:  # the published np predictor: K futures, fixed
        dynamic = {"history": {0: "batch"}, OUTPUT: {0: "batch"}}
    # traced with more futures than maps (K + 1): the np predictor's general path, which cycles through them
    inputs = example_inputs(model, sampler, 2, model.cfg.noise_predictor.k + 1, torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks, constant by design
        torch.onnx.export(graph, inputs, str(path), dynamo=False, opset_version=opset, input_names=list(graph.inputs),
                          output_names=[OUTPUT], dynamic_axes=dynamic)
    _add_metadata(path, model, sampler)
    return path


def _add_metadata(path: Path, model: SPARD, sampler: str) -> None:
    """Record what the graph is (sampler, sizes, config) in the ONNX file's metadata."""
    onnx = _require("onnx")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {
        "spard.sampler": sampler, "spard.t_his": str(model.t_his), "spard.t_total": str(model.cfg.data.t_total),
        "spard.n_pre": str(model.n_pre), "spard.k": str(model.cfg.noise_predictor.k),
        "spard.config": json.dumps(model.cfg.to_dict()),
    })
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _require(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ExportError(f"{name} is not installed: pip install 'spard[export]'") from None


def session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session (`threads` 0: onnxruntime's default)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(names: tuple[str, ...], inputs: tuple) -> dict:
    return {name: x.numpy() for name, x in zip(names, inputs)}


@torch.no_grad()
def check(path: str | Path, model: SPARD, sampler: str, *, num_samples: int, tol: float = 1e-4,
          batches: tuple[int, ...] = (1, 3), seed: int = 0) -> float:
    """Max `|onnxruntime - PyTorch|` / max(1, max |PyTorch|) over random histories; raises above `tol`."""
    sess, graph = session(path), SamplerGraph(model, sampler).eval()
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batches:
        inputs = example_inputs(model, sampler, batch, num_samples, generator)
        want = graph(*inputs)
        got = torch.from_numpy(sess.run(None, _feeds(graph.inputs, inputs))[0])
        if got.shape != want.shape:
            raise ExportError(f"{path}: onnxruntime gives shape {list(got.shape)}, PyTorch {list(want.shape)}")
        worst = max(worst, float((got - want).abs().max() / want.abs().max().clamp_min(1.0)))
    if not worst <= tol:
        raise ExportError(f"{path}: onnxruntime differs from PyTorch by {worst:.2e} (relative), above {tol:.0e}")
    return worst


def latency(path: str | Path, model: SPARD, sampler: str, *, num_samples: int, repeats: int = 20,
            threads: int = 0) -> float:
    """Median seconds of one onnxruntime CPU run for 1 history (x num_samples for onestep, x K for np)."""
    sess = session(path, threads)
    feeds = _feeds(inputs_of(model, sampler), example_inputs(model, sampler, 1, num_samples,
                                                          torch.Generator().manual_seed(1)))
    for _ in range(min(3, repeats)):  # warm-up
        sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# command line

def parser() -> argparse.ArgumentParser:
    p = Parser(prog="spard export", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
               formatter_class=argparse.RawDescriptionHelpFormatter, replaces="existing ONNX files")
    p.add_argument("--ckpt", required=True, help="our checkpoint file, or a stage folder holding one "
                                                 "(np needs the result of stage np)")
    p.add_argument("--sampler", choices=("np", "onestep", "both"), default="both", help="predictor(s) to export")
    p.add_argument("--out", default="export", help="output folder: spard_<sampler>.onnx")
    p.add_argument("--num_samples", type=int, default=50,
                   help="onestep samples S for the check and the latency (the graph takes any S)")
    p.add_argument("--check", action="store_true", default=True,
                   help="verify onnxruntime against PyTorch on random histories, max diff <= 1e-4 (default)")
    p.add_argument("--no_check", dest="check", action="store_false", help="skip that check")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument("--repeats", type=int, default=20, help="latency: timed runs (the median is printed; 0: no timing)")
    p.add_argument("--threads", type=int, default=0, help="latency: onnxruntime intra-op threads (0: its default)")
    return p


def run(args) -> dict:
    """Export, check and time each requested predictor; returns `{sampler: {path, max_diff, seconds}}`."""
    from .checkpoints import load_model

    samplers = ("np", "onestep") if args.sampler == "both" else (args.sampler,)
    if args.num_samples < 1:
        raise ExportError(f"--num_samples must be >= 1, got {args.num_samples}")
    model, ckpt = load_model(find_checkpoint(args.ckpt))
    for sampler in samplers:
        check_sampler(ckpt["stage"], sampler)
    model.eval()
    out, report = Path(args.out), {}
    for sampler in samplers:
        path = out / f"spard_{sampler}.onnx"
        if path.exists() and not args.overwrite:
            raise ExportError(f"{path} already exists; pass --overwrite to replace it")
        export_onnx(model, sampler, path, opset=args.opset)
        samples = args.num_samples if "noise" in inputs_of(model, sampler) else model.cfg.noise_predictor.k
        print(f"wrote {path} ({_signature(model, sampler)}; opset {args.opset})")
        report[sampler] = {"path": str(path), "samples": samples}
        if args.check:
            diff = check(path, model, sampler, num_samples=args.num_samples)
            print(f"  check: onnxruntime equals PyTorch, max |diff| {diff:.1e} (relative to output scale)")
            report[sampler]["max_diff"] = diff
        if args.repeats > 0:
            seconds = latency(path, model, sampler, num_samples=args.num_samples, repeats=args.repeats,
                              threads=args.threads)
            threads = args.threads or "default"
            print(f"  latency: onnxruntime CPU, 1 history x {samples} samples: {1000 * seconds:.2f} ms "
                  f"(median of {args.repeats} runs, threads {threads})")
            report[sampler]["seconds"] = seconds
    return report


def _signature(model: SPARD, sampler: str) -> str:
    d, t = model.dim, model.cfg.data.t_total
    if "noise" not in inputs_of(model, sampler):
        return f"history [B, {model.t_his}, {d}] -> {OUTPUT} [B, {model.cfg.noise_predictor.k}, {t}, {d}]"
    return f"history [B, {model.t_his}, {d}], noise [S, B, {model.n_pre}, {d}] -> {OUTPUT} [B, S, {t}, {d}]"
