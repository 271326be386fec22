"""Run folders and logs: where each stage writes, and the rules that keep earlier results safe.

    <out_dir>/<stage folder>/<ckpt name>     the stage's result (the path the README's commands use)
    <out_dir>/<stage folder>/runs/<NNN>/      one folder per run: log.txt, tb/, last.pt, best.pt, ...

An existing result is never replaced without `--overwrite`, whatever the way there (a new run, a
resumed one, a run that finishes after another wrote the result); an unfinished run (its `last.pt`
not marked finished) is resumed by default, only with the settings it started with; one process at
a time trains in a stage folder (`StageLock`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no locking there
    fcntl = None

from .checkpoints import CheckpointError, read_file
from .config import Config, fields_of
from .stages import STAGES


class RunError(ValueError):
    """A run that cannot start as asked; the message says what to do."""


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file itself, or the one a folder holds: a results folder (latest stage first),
    a stage folder (its result), or a run folder (`best.pt`, then `last.pt`)."""
    path = Path(path)
    if not path.is_dir():
        return path
    stages = list(reversed(STAGES.values()))  # np, distill, base
    names = [s.ckpt for s in stages] + ["best.pt", "last.pt"]
    for folder in [path] + [path / f.folder for f in stages]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(f"{path} holds none of {', '.join(names)}; give the checkpoint file itself")


def result_path(out_dir: str | Path, stage: str) -> Path:
    return Path(out_dir) / STAGES[stage].folder / STAGES[stage].ckpt


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when `folder` could not be created or written; creates nothing."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise RunError(f"cannot create output folder {folder}: {existing} is a file; choose another --out_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"output folder {existing} is not writable; choose another --out_dir or fix its permissions")


def make_folder(folder: Path) -> Path | None:
    """Create `folder` (and parents); return the topmost folder this created (None if it existed).

    A command that fails before writing its results removes that folder again, so a failed start
    leaves the file tree as it was.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _runs(stage_dir: Path) -> list[Path]:
    runs = stage_dir / "runs"
    return sorted((p for p in runs.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if runs.is_dir() else []


def unfinished_run(stage_dir: Path) -> Path | None:
    """The latest run folder whose `last.pt` says it has not finished, if any."""
    runs = _runs(stage_dir)
    if not runs or not (runs[-1] / "last.pt").is_file():
        return None
    try:
        state = read_file(runs[-1] / "last.pt")
    except ValueError:
        return None  # a damaged last.pt cannot be resumed; a new run starts
    return None if state.get("finished") else runs[-1]


def open_run(out_dir: str | Path, stage: str, *, resume: bool | str = True, overwrite: bool = False) -> tuple[Path, Path | None]:
    """Choose the run folder, creating nothing: `(run_dir, checkpoint to resume from or None)`.

    `resume` True resumes an unfinished run if there is one; a path resumes that checkpoint (or the
    `last.pt` of that run folder); False always starts a new run (the next number, created by the caller).
    """
    stage_dir = Path(out_dir) / STAGES[stage].folder
    check_writable(stage_dir)
    result = result_path(out_dir, stage)
    if isinstance(resume, (str, Path)) and resume:
        path = Path(resume)
        path = path / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise RunError(f"--resume {resume}: no checkpoint there; give a run folder or its last.pt")
        state = read_file(path)
        saved = state.get("stage") if isinstance(state, dict) else None
        if saved != stage:
            raise RunError(f"--resume {path} is a '{saved}' run but this is stage '{stage}'; "
                           f"give a run folder of this stage")
        if not all(key in state for key in ("optimizer", "scheduler", "rng", "epoch")):
            raise RunError(f"--resume {path} is a stage result, not a run's checkpoint: give a run folder "
                           f"(<stage>/runs/NNN) or its last.pt")
        if result.exists() and not overwrite:
            raise RunError(f"{result} already exists; pass --overwrite to let the resumed run replace it")
        return path.parent, path
    if resume:
        run = unfinished_run(stage_dir)
        if run is not None:
            if result.exists() and not overwrite:
                raise RunError(f"{run} is unfinished but {result} already exists: pass --overwrite to resume it and "
                               f"replace that result, or --no_resume to leave both as they are")
            return run, run / "last.pt"
    if result.exists() and not overwrite:
        raise RunError(f"{result} already exists; pass --overwrite to replace it, or --out_dir to write elsewhere")
    runs = _runs(stage_dir)
    return stage_dir / "runs" / f"{int(runs[-1].name) + 1 if runs else 1:03d}", None


def resume_conflicts(saved: Config, now: Config) -> list[str]:
    """The settings that differ between a run's config and this command's, except those a resumed run may
    change (`Setting.changeable`: more epochs, other data paths, evaluation settings): `['--lr 0.0001 -> 0.001']`."""
    differ = []
    for section in ("data", "denoiser", "noise_predictor", "diffusion", "train"):
        for f, s, _ in fields_of(getattr(now, section)):
            a, b = getattr(getattr(saved, section), f.name), getattr(getattr(now, section), f.name)
            if a != b and not s.changeable:
                differ.append(f"--{s.flag if s.flag is not None else f.name} {a} -> {b}")
    return differ


def check_resume(path: Path, cfg: Config, data_sha256: str | None = None) -> None:
    """A one-line RunError unless the run checkpoint `path` was made with `cfg`'s settings (up to those a
    resumed run may change) and, when it records one, from training data of fingerprint `data_sha256`
    (`Dataset.training_sha256`: the data path may change, the data may not)."""
    state = read_file(path)
    saved_data = state.get("data_sha256") if isinstance(state, dict) else None
    if data_sha256 is not None and saved_data is not None and saved_data != data_sha256:
        raise RunError(f"{path.parent} was trained on other data than {cfg.data.data_dir} holds now: resume it with "
                       f"its data, or start a new run with --no_resume")
    try:
        saved = Config.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path} holds no readable config ({str(e).splitlines()[0][:120]}); start a new run with "
                       f"--no_resume") from None
    differ = resume_conflicts(saved, cfg)
    if differ:
        raise RunError(f"{path.parent} was started with other settings ({'; '.join(differ[:3])}): rerun with its "
                       f"settings (--config {path.parent / 'config.json'}) or start a new run with --no_resume")


def read_history(path: Path) -> list[dict]:
    """The records of a run's `history.jsonl`; a torn last line (a write cut off by a kill) is left out."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise RunError(f"{path} line {i + 1} is not a JSON record; repair or remove that line") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise RunError(f"{path} line {i + 1} is not an epoch record; repair or remove that line")
        records.append(record)
    return records


class StageLock:
    """One process at a time trains in a stage folder: an exclusive `flock` on `<folder>/.lock`, which the
    system releases when the process ends, however it ends. The file names the holder for the message;
    when the block fails, a lock file this lock created is removed again. The folder must exist."""

    def __init__(self, folder: Path):
        self.path, self.file, self.new_file = Path(folder) / ".lock", None, False

    def __enter__(self) -> "StageLock":
        if fcntl is None:
            return self
        self.new_file = not self.path.exists()
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunError(f"{self.path.parent} is in use by {holder}; wait for it to finish or use another "
                           f"--out_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                        f"({' '.join(sys.argv[:1] + sys.argv[1:][:6])})")
        self.file.flush()
        return self

    def __exit__(self, kind, *_) -> None:
        if self.file is None:
            return
        self.file.truncate(0)
        if kind is not None and self.new_file:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        self.file = None


def make_logger(run_dir: Path | None, name: str = "spard", quiet: bool = False) -> logging.Logger:
    """Bare messages on the console, `[time] message` in `<run_dir>/log.txt` (appended)."""
    logger = logging.getLogger(f"{name}.{run_dir}")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not quiet:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    if run_dir is not None:
        handler = logging.FileHandler(Path(run_dir) / "log.txt")
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
        logger.addHandler(handler)
    return logger
