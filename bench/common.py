"""Shared helpers of the benchmark scripts: timing, machine description, result files.

Every script prints a table and writes JSON (default `bench/results/<name>.json`). Times on a GPU
are CUDA-event medians after warm-up; on a CPU, `perf_counter` medians.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    return info


def commit() -> str:
    """The commit measured: `git describe` of the checkout (`+changes` when the tree differs from it outside
    bench/results, which earlier runs write), or `SPARD_COMMIT` where the tree travels without its .git folder."""
    if os.environ.get("SPARD_COMMIT"):
        return os.environ["SPARD_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, device, *, warmup: int = 3, min_reps: int = 10, min_seconds: float = 1.0, max_reps: int = 200) -> dict:
    """Median, min and max milliseconds of `fn()` over repeated calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times, started = [], time.perf_counter()
    cuda = torch.device(device).type == "cuda"
    while len(times) < min_reps or (time.perf_counter() - started < min_seconds and len(times) < max_reps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": len(times)}


def graph_call_us(fn, reps: int = 20) -> float:
    """Median microseconds per call of `fn` on a GPU, from replays of a CUDA graph of `reps` calls
    (launch gaps as inside a sampler's graph)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(15):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) * 1e3 / reps)
    return statistics.median(times)


def matmul_peak_tflops(device, dtype=torch.bfloat16, n: int = 8192) -> float:
    """Measured dense matrix-product rate (random data), the ceiling the fractions refer to."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, warmup=3, min_reps=10)
    return 2 * n**3 / (t["median_ms"] * 1e-3) / 1e12


def write(name: str, result: dict, out: str | None = None) -> Path:
    path = Path(out) if out else Path(__file__).resolve().parent / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "commit": commit(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), **result}
    path.write_text(json.dumps(result, indent=1))
    if os.environ.get("OUT"):  # the GPU machine's output folder
        Path(os.environ["OUT"], path.name).write_text(json.dumps(result, indent=1))
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
