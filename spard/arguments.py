"""Command-line arguments shared by every `spard` command: one-line errors, value parsers, the
configuration flags (generated from the `Setting` of each config field) and the device.

Errors are `UsageError`s (one line; the `spard` command prints `error: ...` and exits with 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from .config import SECTIONS, Config, fields_of, flag_of, preset


class UsageError(ValueError):
    """Bad command-line input."""


class _Help(argparse.HelpFormatter):
    """Help that shows each flag's default, unless its text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" not in text and action.option_strings and action.nargs != 0
                and not (default is None or default is False or default == "" or default == argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class _RawHelp(_Help, argparse.RawDescriptionHelpFormatter):
    """The same, with the description and epilog kept as written."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `UsageError` line; help shows every default. Every command
    has `--debug`; `replaces` (what the command may replace) adds `--overwrite`."""

    def __init__(self, *args, replaces: str | None = None, **kwargs):
        raw = kwargs.get("formatter_class") is argparse.RawDescriptionHelpFormatter
        kwargs["formatter_class"] = _RawHelp if raw else _Help
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show tracebacks")  # read by spard.cli.main
        if replaces:
            self.add_argument("--overwrite", action="store_true", help=f"replace {replaces}")

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} -h`)")


def add_sampler_flag(group, flag: str = "--sampler", baselines: bool = False) -> None:
    """The sampler flag (`spard.samplers.SAMPLERS`, with `baselines` the trivial ones too); default: the stage's own."""
    from .baselines import BASELINES
    from .samplers import SAMPLERS
    from .stages import STAGES

    own = ", ".join(f"{s.name}: {s.sampler}" for s in STAGES.values())
    group.add_argument(flag, choices=tuple(SAMPLERS) + (tuple(BASELINES) if baselines else ()), default=None,
                       help=f"default: the stage's own ({own})" + ("; baselines need no checkpoint" * baselines))


def boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive(kind):
    """A parser of numbers > 0 of type `kind`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _list_of(kind):
    def parse(text: str) -> tuple:
        items = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
        try:
            return tuple(kind(x) for x in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a list like 100,200, got {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _parser_for(kind):
    """The argparse `type` of a config field's annotation."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is tuple:
        return _list_of(args[0])
    if args and typing.get_origin(kind) is not tuple and len(args) == 1:  # X | None
        return _parser_for(args[0])
    return {bool: boolean, int: int, float: float}.get(kind, str)


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value in (None, "") else str(value)


def add_config_flags(p: argparse.ArgumentParser, cfg_name: str) -> None:
    """One flag per config field (its `Setting`), published names as aliases; defaults: `cfg_name`'s preset."""
    defaults = preset(cfg_name)
    for section in SECTIONS:
        group = p.add_argument_group(f"{section} settings (defaults: the --cfg preset, here {cfg_name})")
        for f, s, _ in fields_of(SECTIONS[section]):
            if flag_of(f, s):
                value = getattr(getattr(defaults, section), f.name)
                add_setting_flag(group, f"{section}.{f.name}", shown=None if "default" in s.help else _shown(value))
    group = p.add_argument_group("earlier names of --precision")
    group.add_argument("--amp", choices=("none", "bf16"), default=None, help="bf16: --precision bf16")
    group.add_argument("--tf32", type=boolean, default=None, help="false: --precision fp32")


def add_setting_flag(group, path: str, *, shown: str | None = None, note: str = "", **override) -> None:
    """The flag of config field `path` ("section.field") as its `Setting` declares it (name, published aliases,
    type, choices, help); the value lands in `args.<path>`, None when not given. `shown`: the default the
    help names; `note`: added to the help; `override`: argparse keywords a command sets otherwise."""
    section, name = path.split(".")
    f, s, kind = next(x for x in fields_of(SECTIONS[section]) if x[0].name == name)
    flag = flag_of(f, s)
    text = s.help + (f" (default: {shown})" if shown is not None else "") + note
    group.add_argument(f"--{flag}", *(f"--{a}" for a in s.aliases), dest=path, type=_parser_for(kind),
                       choices=s.choices, metavar=None if s.choices else flag.upper(),
                       **{"default": None, "help": text.replace("%", "%%"), **override})


def config_from_args(args) -> Config:
    """The run's config: `--config` (a recorded run's config.json) or the `--cfg` preset, with every
    configuration flag given on the line written over it. Checked: an invalid value is one line."""
    if getattr(args, "config", None):
        cfg = read_config(args.config)
        if args.cfg and args.cfg != cfg.data.name:
            raise UsageError(f"--config {args.config} is a '{cfg.data.name}' config but --cfg is {args.cfg}")
    elif (args.cfg or args.script_cfg) is None:
        raise UsageError("no --cfg given: choose h36m, amass or deepmimic (or --config a run's config.json)")
    else:
        cfg = preset(args.cfg or args.script_cfg)
    values = {section: {} for section in SECTIONS}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            values[section][name] = value
    precision = legacy_precision(args.amp, args.tf32)
    if precision is not None:
        if values["train"].get("precision", precision) != precision:
            raise UsageError(f"--precision {values['train']['precision']} contradicts --amp/--tf32; give --precision only")
        values["train"]["precision"] = precision
    for section in SECTIONS:  # files and folders as absolute paths: config.json then reruns from any folder
        for f, s, _ in fields_of(SECTIONS[section]):
            value = values[section].get(f.name, getattr(getattr(cfg, section), f.name))
            if s.path and value:
                values[section][f.name] = str(Path(value).absolute())
    parts = {s: dataclasses.replace(getattr(cfg, s), **v) for s, v in values.items() if v}
    return dataclasses.replace(cfg, **parts)


def legacy_precision(amp: str | None, tf32: bool | None) -> str | None:
    """`--amp` and `--tf32` (earlier flags) as a precision name, None when neither is given."""
    if amp is None and tf32 is None:
        return None
    if amp == "bf16":
        if tf32 is False:
            raise UsageError("--amp bf16 with --tf32 false is not offered: use --precision bf16 or --precision fp32")
        return "bf16"
    return "fp32" if tf32 is False else "tf32"


def read_config(path: str | Path) -> Config:
    """A run's `config.json` (or an evaluation's record, which holds one), read like every JSON file spard
    reads (`spard.data.files.read_json`); one-line errors."""
    from .data.files import read_json

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path} not found: give the config.json of a run folder")
    obj = read_json(path, "give the config.json of a run folder")
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        obj = obj["config"]
    try:
        return Config.from_dict(obj)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--config {path} is not a spard config ({str(e).splitlines()[0][:160]})") from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (as the published scripts do)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    """`--device` checked (one line when it is not usable); `cuda` falls back to the CPU, with a note, without a GPU."""
    from .devices import resolve_device as resolve

    try:
        return str(resolve(name, cpu_fallback=True))
    except ValueError as e:
        raise UsageError(f"--{e}") from None
