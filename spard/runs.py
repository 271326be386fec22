"""Run folders and logs: where each stage writes, and the rules that keep earlier results safe.

    <out_dir>/<stage folder>/<ckpt name>     the stage's result (the path the README's commands use)
    <out_dir>/<stage folder>/runs/<NNN>/      one folder per run: log.txt, tb/, last.pt, best.pt, ...

A new run never replaces an existing result without `--overwrite`; an unfinished run (its `last.pt`
not marked finished) is resumed by default.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CheckpointError, read_file


class RunError(ValueError):
    """A run that cannot start as asked; the message says what to do."""


@dataclass(frozen=True)
class StageFiles:
    folder: str  # results/<ds>/<folder>
    ckpt: str  # the stage's result file


STAGE_FILES = {"base": StageFiles("train", "ckpt.pt"), "distill": StageFiles("distill", "distill_ckpt.pt"),
               "np": StageFiles("np", "np_ckpt.pt")}


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file itself, or the one a folder holds: a results folder (latest stage first),
    a stage folder (its result), or a run folder (`best.pt`, then `last.pt`)."""
    path = Path(path)
    if not path.is_dir():
        return path
    stages = list(reversed(STAGE_FILES.values()))  # np, distill, base
    names = [f.ckpt for f in stages] + ["best.pt", "last.pt"]
    for folder in [path] + [path / f.folder for f in stages]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(f"{path} holds none of {', '.join(names)}; give the checkpoint file itself")


def result_path(out_dir: str | Path, stage: str) -> Path:
    f = STAGE_FILES[stage]
    return Path(out_dir) / f.folder / f.ckpt


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
    stage_dir = Path(out_dir) / STAGE_FILES[stage].folder
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
        if result.exists() and not overwrite:
            raise RunError(f"{result} already exists; pass --overwrite to let the resumed run replace it")
        return path.parent, path
    if resume:
        run = unfinished_run(stage_dir)
        if run is not None:
            return run, run / "last.pt"
    if result.exists() and not overwrite:
        raise RunError(f"{result} already exists; pass --overwrite to replace it, or --out_dir to write elsewhere")
    runs = _runs(stage_dir)
    return stage_dir / "runs" / f"{int(runs[-1].name) + 1 if runs else 1:03d}", None


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
