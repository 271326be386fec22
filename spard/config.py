"""Configuration: one dataclass per component, per-dataset presets, and every setting described once.

A `Config` bundles what a run needs. Presets (`preset("h36m")`, `preset("amass")`,
`preset("deepmimic")`) carry the published values; any field can be overridden from Python
(`dataclasses.replace`) or from the command line. Each field is declared once, with its help text,
command-line flag (the published names are aliases) and valid range (`setting`); the command line
is generated from these declarations, and every config is checked against them when it is built,
so an invalid config cannot exist. Sizes that follow from others (D = 3J, T = t_his + t_pred, the
refiner's DCT size) are computed, never stored.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # see spard/precision.py; training takes the first three


@dataclass(frozen=True)
class Setting:
    """What the command line and the checks know of a config field."""

    help: str
    flag: str | None = None  # command-line flag (default: the field name); "" = not on the command line
    aliases: tuple[str, ...] = ()  # published or earlier flag names
    low: float | None = None  # inclusive bounds ...
    high: float | None = None
    above: float | None = None  # ... and exclusive ones
    below: float | None = None
    choices: tuple[str, ...] | None = None
    changeable: bool = False  # may differ when a run resumes (it does not change what was trained so far)
    path: bool = False  # a file or folder: recorded as an absolute path, so that a recorded run reruns anywhere

    def requirement(self) -> str:
        parts = [f">= {self.low:g}" if self.low is not None else "", f"> {self.above:g}" if self.above is not None else "",
                 f"<= {self.high:g}" if self.high is not None else "", f"< {self.below:g}" if self.below is not None else ""]
        return " and ".join(p for p in parts if p)


def setting(default, help: str, **kw):
    """A dataclass field with its `Setting`."""
    return field(default=default, metadata={"setting": Setting(help, **kw)})


class ConfigError(ValueError):
    """An invalid setting; the message names the flag, the rule and the value."""


def _check_value(name: str, kind, value, s: Setting) -> None:
    """One-line ConfigError unless `value` has the field's type and lies in its range."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        for item in value:
            _check_value(name, args[0], item, s)
        return
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        what = {bool: "true or false", int: "an integer", float: "a finite number"}.get(kind, "text")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{name} must be one of {', '.join(s.choices)}, got {value!r}")
    if kind in (int, float):
        if ((s.low is not None and value < s.low) or (s.high is not None and value > s.high)
                or (s.above is not None and value <= s.above) or (s.below is not None and value >= s.below)):
            raise ConfigError(f"{name} must be {s.requirement()}, got {value!r}")


def fields_of(section) -> list[tuple[dataclasses.Field, Setting, object]]:
    """`(field, setting, type)` of every field of a config section (class or instance)."""
    hints = typing.get_type_hints(section if isinstance(section, type) else type(section))
    return [(f, f.metadata["setting"], hints[f.name]) for f in dataclasses.fields(section)]


def flag_of(f: dataclasses.Field, s: Setting) -> str:
    return f.name if s.flag is None else s.flag


class Section:
    """Base of the config sections: every field is checked against its `Setting` when built."""

    def __post_init__(self):
        for f, s, kind in fields_of(self):
            flag = flag_of(f, s)
            name = "/".join(f"--{n}" for n in (flag, *s.aliases[:1])) if flag else f"{type(self).__name__}.{f.name}"
            _check_value(name, kind, getattr(self, f.name), s)


@dataclass
class DataConfig(Section):
    """Where the motion comes from and how it is cut into windows (the dataset's protocol)."""

    name: str = setting("h36m", "reader: h36m (any GSPS-format npz), amass (BeLFusion zarr), deepmimic", flag="",
                        choices=("h36m", "amass", "deepmimic"))
    data_dir: str = setting("data/h36m", "dataset folder (or the npz file itself)", changeable=True, path=True)
    fps: float = setting(50.0, "frames per second of the data", flag="", above=0)
    t_his: int = setting(25, "observed frames", low=1)
    t_pred: int = setting(100, "predicted frames", low=1)
    num_joints: int = setting(16, "joints the model sees (root dropped)", flag="", low=1)
    train_splits: tuple[str, ...] = setting(("S1", "S5", "S6", "S7", "S8"), "training subjects (H36M) or datasets (AMASS)",
                                            flag="")
    test_splits: tuple[str, ...] = setting(("S9", "S11"), "test subjects or datasets", flag="")
    val_fraction: float = setting(0.1, "share of the training clips held out to select the stage result", low=0, below=1)
    stride: int = setting(10, "training windows: one per stride frames of the stride-1 window list ...", low=1)
    aug: int = setting(5, "... jittered by a uniform integer offset in [-aug, aug]",
                       aliases=("augmentation", "augumentation"), low=0)
    rota_prob: float = setting(1.0, "probability of a random rotation about the vertical axis", low=0, high=1)
    multimodal_threshold: float = setting(0.5, "last-observed-pose distance of the multimodal ground truth", above=0)
    segments_csv: str | None = setting(None, "test windows (default: <data_dir>/segments_test.csv if present)",
                                       aliases=("segments",), changeable=True, path=True)
    mmapd_csv: str | None = setting(None, "APDE reference (default: <data_dir>/mmapd_GT.csv if present)",
                                    aliases=("mmapd",), changeable=True, path=True)
    classes_json: str | None = setting(None, "class list and CMD reference (default: <data_dir>/classes.json)",
                                       aliases=("classes",), changeable=True, path=True)
    fid_classifier: str | None = setting(None, "Human3.6M FID classifier (.pth); FID is n/a without it",
                                         changeable=True, path=True)

    @property
    def t_total(self) -> int:
        return self.t_his + self.t_pred

    @property
    def dim(self) -> int:
        """D = 3J: the model's features per frame."""
        return 3 * self.num_joints


@dataclass
class DenoiserConfig(Section):
    """Transformer over DCT tokens + GCN refiner (docs/method.md section 3)."""

    n_pre: int = setting(20, "DCT coefficients of the diffusion state (transformer tokens)", low=1)
    refine_n_pre: int | None = setting(None, "DCT size of the GCN refiner (default: T = t_his + t_pred)", low=1)
    padding: str = setting("LastFrame", "history -> T frames for the condition", choices=("LastFrame", "Repeat"))
    latent_dim: int = setting(512, "transformer width", aliases=("latent_dims",), low=1)
    ff_size: int = setting(1024, "feed-forward width", low=1)
    num_layers: int = setting(8, "transformer blocks (even: U-Net skips join the two halves)", low=2)
    num_heads: int = setting(8, "attention heads (divide --latent_dim)", low=1)
    dropout: float = setting(0.2, "transformer dropout", low=0, below=1)
    gcn_hidden: int = setting(256, "GCN refiner width", aliases=("gcn_linear_size",), low=1)
    gcn_layers: int = setting(6, "GCN refiner residual blocks", low=0)
    gcn_dropout: float = setting(0.5, "GCN refiner dropout", low=0, below=1)


@dataclass
class NoisePredictorConfig(Section):
    """GCN that maps the condition to K noise maps (docs/method.md section 4, stage 3)."""

    hidden: int = setting(256, "noise-predictor GCN width", flag="np_hidden", aliases=("np_gcn_linear_size",), low=1)
    layers: int = setting(6, "noise-predictor GCN residual blocks", flag="np_layers", aliases=("np_gcn_layers",), low=0)
    dropout: float = setting(0.5, "noise-predictor dropout", flag="np_dropout", aliases=("np_gcn_dropout",), low=0, below=1)
    k: int = setting(50, "noise maps K = futures of the np sampler", flag="np_k", aliases=("k",), low=1)
    alpha: float = setting(3.0, "noise-map amplitude: eps_k = alpha tanh(.)", flag="np_alpha", above=0)
    noise: float = setting(1.0, "standard deviation of fresh N(0, I) noise added to each noise map, in training and "
                           "sampling: any number of futures, cycling through the K maps (1, the default, was chosen "
                           "on validation: docs/results.md; 0: the published noise predictor, K deterministic "
                           "maps)", flag="np_noise", low=0)
    objective: str = setting("published", "stage-3 loss over the K maps: published (min over K), relaxed "
                             "(min, plus --np_relax of the mean of the others), prior (min, plus --np_prior times "
                             "the KL of the maps' spread over K to N(0, 1))", flag="np_objective",
                             choices=("published", "relaxed", "prior"))
    relax: float = setting(0.05, "relaxed objective: weight of the maps that did not win", flag="np_relax",
                           low=0, below=1)
    prior: float = setting(0.01, "prior objective: weight of the KL term", flag="np_prior", low=0)


@dataclass
class DiffusionConfig(Section):
    """Residual-shift eta schedule (docs/method.md section 2) and the guided sampler's weight."""

    schedule: str = setting("exponential", "eta schedule", aliases=("scheduler",), choices=("exponential", "linear"))
    noise_steps: int = setting(5, "diffusion steps S", low=2)
    sample_steps: int = setting(5, "ddim sampling steps (<= noise_steps)", low=1)
    eta_min: float = setting(0.04, "schedule start", aliases=("etas_min",), above=0, below=1)
    eta_end: float = setting(0.99, "the last sqrt(eta)", aliases=("etas_max",), above=0, high=1)
    kappa: float = setting(4.0, "noise scale", above=0)
    power: float = setting(0.3, "schedule shape p", above=0)
    guidance: float = setting(0.3, "classifier-free guidance weight w of ddim and of the distillation teacher "
                              "(an interpolation)", aliases=("mode_test", "mod_test"), low=0, high=1)


@dataclass
class TrainConfig(Section):
    """Optimisation and evaluation settings shared by the three stages."""

    batch_size: int = setting(64, "windows per optimiser step (BatchNorm needs >= 2)", low=2)
    num_epoch: int = setting(1000, "last epoch", low=1, high=10**6, changeable=True)
    start_epoch: int = setting(1, "first epoch", low=1)
    lr: float = setting(1e-4, "Adam learning rate", above=0, high=1)
    milestones: tuple[int, ...] = setting(tuple(range(100, 1001, 100)), "epochs where the learning rate is multiplied "
                                          "by --gamma, e.g. 100,200", aliases=("milestone",), low=1)
    gamma: float = setting(0.9, "learning-rate factor at each milestone", above=0)
    div_k: int = setting(10, "h: best-of-h noisy copies in the stage-1 loss", low=1)
    mod_train: float = setting(0.5, "probability of keeping the condition in stage 1", low=0, high=1)
    per_sample_dropout: bool = setting(False, "condition dropout per window (published: one coin for the batch)")
    loss: str = setting("mae", "reconstruction error: mae (L1) or mse", choices=("mae", "mse"))
    seed: int = setting(0, "seed of every random draw", low=0, high=2**32 - 1)
    num_samples: int = setting(50, "futures per history at evaluation", low=1, changeable=True)
    eval_batch_size: int = setting(16, "histories per evaluation batch", low=1, changeable=True)
    metrics_epoch: int = setting(50, "validation metrics every k epochs (0: never)", low=0, changeable=True)
    save_model_interval: int = setting(100, "keep ckpt_<epoch>.pt every k epochs (0: never)", low=0, changeable=True)
    checkpoint_every: int = setting(1, "resumable checkpoint every k epochs", low=1, changeable=True)
    precision: str = setting("tf32", "fp32, tf32 (float32 weights, TF32 products on GPUs) or bf16 (autocast)",
                             choices=PRECISIONS[:3])
    compile: str = setting("none", "torch.compile the step: default, reduce-overhead (CUDA graphs of forward and "
                           "backward) or step-graph (the whole step, all-reduce and Adam included, one CUDA graph)",
                           choices=("none", "default", "reduce-overhead", "step-graph"), changeable=True)


SECTIONS = {"data": DataConfig, "denoiser": DenoiserConfig, "noise_predictor": NoisePredictorConfig,
            "diffusion": DiffusionConfig, "train": TrainConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    noise_predictor: NoisePredictorConfig = field(default_factory=NoisePredictorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        """Rules that involve more than one field."""
        d, den, s, t = self.data, self.denoiser, self.diffusion, self.train
        checks = [
            (den.n_pre <= d.t_total, f"--n_pre ({den.n_pre}) cannot exceed t_his + t_pred ({d.t_total})"),
            (den.refine_n_pre is None or den.refine_n_pre <= d.t_total,
             f"--refine_n_pre ({den.refine_n_pre}) cannot exceed t_his + t_pred ({d.t_total})"),
            (den.latent_dim % den.num_heads == 0,
             f"--latent_dim ({den.latent_dim}) must be divisible by --num_heads ({den.num_heads})"),
            (den.num_layers % 2 == 0, f"--num_layers must be even (U-Net skips join two halves), got {den.num_layers}"),
            (s.sample_steps <= s.noise_steps, f"--sample_steps ({s.sample_steps}) cannot exceed --noise_steps "
                                              f"({s.noise_steps})"),
            (s.eta_min < s.eta_end, f"--eta_min ({s.eta_min}) must be below --eta_end ({s.eta_end})"),
            (t.num_epoch >= t.start_epoch, f"--num_epoch ({t.num_epoch}) is before --start_epoch ({t.start_epoch})"),
            (list(t.milestones) == sorted(set(t.milestones)), f"--milestones must increase, got {list(t.milestones)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A config from `to_dict()` output (also the format of spard 0.1: see `_upgrade`)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
        d = _upgrade(d)
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; expected some of {sorted(SECTIONS)}")
        return cls(**{name: _section(klass, d.get(name, {})) for name, klass in SECTIONS.items()})


def _section(klass, values):
    if not isinstance(values, dict):
        raise ConfigError(f"config section {klass.__name__} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown {klass.__name__} fields {sorted(unknown)}; expected some of {sorted(names)}")
    return klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _upgrade(d: dict) -> dict:
    """Configs written by spard 0.1 stored derived sizes and named some settings otherwise: check the
    sizes agree with the ones computed now, drop them, and rename the rest. Their noise predictor is the
    published one (no noise added to the maps)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    data, den, npc, train = (d.get(k) if isinstance(d.get(k), dict) else {} for k in ("data", "denoiser",
                                                                                      "noise_predictor", "train"))
    joints, t_his = data.get("num_joints", DataConfig.num_joints), data.get("t_his", DataConfig.t_his)
    t_total = t_his + data.get("t_pred", DataConfig.t_pred) if isinstance(t_his, int) else None
    if "n_pre" in npc or "input_feats" in npc:  # spard 0.1 had the published noise predictor only
        npc.setdefault("noise", 0.0)
    derived = {("denoiser", "input_feats"): 3 * joints if isinstance(joints, int) else None,
               ("denoiser", "t_his"): t_his, ("denoiser", "t_total"): t_total,
               ("noise_predictor", "input_feats"): 3 * joints if isinstance(joints, int) else None,
               ("noise_predictor", "n_pre"): den.get("n_pre", DenoiserConfig.n_pre)}
    for (section, key), want in derived.items():
        part = d.get(section)
        if isinstance(part, dict) and key in part:
            if part.pop(key) != want:
                raise ConfigError(f"config {section}.{key} disagrees with the sizes it follows from; the file is damaged")
    if "refine_n_pre" in den and den["refine_n_pre"] == t_total:
        den["refine_n_pre"] = None
    if "mod_test" in train:
        d.setdefault("diffusion", {})["guidance"] = train.pop("mod_test")
    if "amp" in train or "tf32" in train:
        amp, tf32 = train.pop("amp", "none"), train.pop("tf32", True)
        train["precision"] = "bf16" if amp == "bf16" else ("tf32" if tf32 else "fp32")
    train.pop("num_workers", None)
    return d


def _h36m() -> Config:
    return Config()


def _amass() -> Config:
    data = DataConfig(
        name="amass", data_dir="data/amass", fps=60.0, t_his=30, t_pred=120, num_joints=21,
        train_splits=("ACCAD", "BMLhandball", "BMLmovi", "BMLrub", "CMU", "EKUT", "EyesJapanDataset",
                      "KIT", "PosePrior", "TCDHands", "TotalCapture", "HumanEva", "HDM05", "SFU", "MoSh"),
        test_splits=("DFaust", "DanceDB", "GRAB", "HUMAN4D", "SOMA", "SSM", "Transitions"),
        stride=60, aug=30, multimodal_threshold=0.4,
    )
    return Config(data=data)


def _deepmimic() -> Config:
    """Small preset for pybullet's DeepMimic clips: `spard demo` trains its three stages on 2 CPU cores in minutes.

    T = 45 frames as 10 DCT tokens; a narrow transformer (64 wide, 4 layers) and a one-block GCN refiner, without
    dropout: this model underfits rather than overfits, and dropout costs a quarter of a CPU step. Small batches
    give more optimiser steps for the same computation.
    """
    data = DataConfig(
        name="deepmimic", data_dir="", fps=30.0, t_his=15, t_pred=30, num_joints=17,
        train_splits=("train",), test_splits=("test",), stride=4, aug=2, multimodal_threshold=0.5,
    )
    den = DenoiserConfig(n_pre=10, latent_dim=64, ff_size=128, num_layers=4, num_heads=4, dropout=0.0,
                         gcn_hidden=32, gcn_layers=1, gcn_dropout=0.0)
    npc = NoisePredictorConfig(hidden=64, layers=2)
    train = TrainConfig(batch_size=16, num_epoch=15, lr=1e-3, milestones=(10,), gamma=0.5,
                        metrics_epoch=0, save_model_interval=0)
    return Config(data=data, denoiser=den, noise_predictor=npc, train=train)


PRESETS = {"h36m": _h36m, "amass": _amass, "deepmimic": _deepmimic}


def preset(name: str) -> Config:
    """The published settings of a dataset (`h36m`, `amass`) or the embedded default (`deepmimic`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown cfg {name!r}; choose one of {sorted(PRESETS)}") from None
