"""Configuration: one dataclass per component, and per-dataset presets that state the protocol.

A `Config` bundles everything a run needs. Presets (`preset("h36m")`, `preset("amass")`,
`preset("deepmimic")`) carry the published values; every field can be overridden from the CLI or
from Python (`dataclasses.replace`). Derived sizes (D = 3J, T = t_his + t_pred) are computed, never
stored twice, so they cannot disagree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Where the motion comes from and how it is cut into windows (the dataset's protocol)."""

    name: str = "h36m"  # reader: "h36m" (any GSPS-format npz), "amass" (BeLFusion zarr), "deepmimic"
    data_dir: str = "data/h36m"
    fps: float = 50.0
    t_his: int = 25  # observed frames
    t_pred: int = 100  # predicted frames
    num_joints: int = 16  # joints the model sees (root dropped)
    train_splits: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")  # subjects (H36M) or datasets (AMASS)
    test_splits: tuple[str, ...] = ("S9", "S11")
    val_fraction: float = 0.1  # share of the training clips held out for checkpoint selection
    stride: int = 10  # training windows: one per `stride` frames of the stride-1 window list ...
    aug: int = 5  # ... jittered by a uniform integer offset in [-aug, aug]
    rota_prob: float = 1.0  # probability of a random rotation about the vertical (z) axis
    multimodal_threshold: float = 0.5  # last-observed-pose distance for the multimodal ground truth
    segments_csv: str | None = None  # test windows; default: <data_dir>/segments_test.csv if present
    mmapd_csv: str | None = None  # APDE reference; default: <data_dir>/mmapd_GT.csv if present
    classes_json: str | None = None  # class list + CMD reference; default: <data_dir>/classes.json
    fid_classifier: str | None = None  # Human3.6M FID classifier (.pth); FID is "n/a" without it

    @property
    def t_total(self) -> int:
        return self.t_his + self.t_pred

    @property
    def dim(self) -> int:
        return 3 * self.num_joints


@dataclass
class DenoiserConfig:
    """Transformer over DCT tokens + GCN refiner (method.md section 3)."""

    input_feats: int = 48  # D = 3J
    n_pre: int = 20  # DCT coefficients of the diffusion state = transformer tokens
    t_his: int = 25
    t_total: int = 125  # T
    refine_n_pre: int = 125  # DCT size of the GCN refiner (the published code uses T)
    padding: str = "LastFrame"  # history -> T frames for the condition: "LastFrame" or "Repeat" (tiled)
    latent_dim: int = 512
    ff_size: int = 1024
    num_layers: int = 8
    num_heads: int = 8
    dropout: float = 0.2
    gcn_hidden: int = 256
    gcn_layers: int = 6
    gcn_dropout: float = 0.5


@dataclass
class NoisePredictorConfig:
    """GCN that maps the condition to K noise maps (method.md section 4, stage 3)."""

    input_feats: int = 48
    n_pre: int = 20
    hidden: int = 256
    layers: int = 6
    dropout: float = 0.5
    k: int = 50  # noise maps = samples of the np sampler
    alpha: float = 3.0  # amplitude: eps_k = alpha * tanh(.)


@dataclass
class DiffusionConfig:
    """Residual-shift eta schedule (method.md section 2)."""

    schedule: str = "exponential"  # or "linear"
    noise_steps: int = 5
    sample_steps: int = 5
    eta_min: float = 0.04
    eta_end: float = 0.99  # the last *sqrt* eta
    kappa: float = 4.0
    power: float = 0.3


@dataclass
class TrainConfig:
    """Optimisation and evaluation settings shared by the three stages."""

    batch_size: int = 64
    num_epoch: int = 1000
    start_epoch: int = 1
    lr: float = 1e-4
    milestones: tuple[int, ...] = tuple(range(100, 1001, 100))
    gamma: float = 0.9
    div_k: int = 10  # h: best-of-h copies in the stage-1 loss
    mod_train: float = 0.5  # probability of keeping the condition in stage 1
    per_sample_dropout: bool = False  # published: one coin for the whole batch
    mod_test: float = 0.3  # guidance weight w of the ddim sampler
    loss: str = "mae"  # "mae" (L1) or "mse"
    seed: int = 0
    num_samples: int = 50  # futures per history at evaluation
    eval_batch_size: int = 16
    metrics_epoch: int = 50  # full evaluation every k epochs (0: never during training)
    save_model_interval: int = 100  # keep ckpt_<epoch>.pt every k epochs (0: never)
    checkpoint_every: int = 1  # resumable checkpoint every k epochs
    amp: str = "none"  # "none" or "bf16" autocast
    tf32: bool = True  # TF32 matrix products on GPUs (float32 storage, faster products)
    # torch.compile the training step: "none", "default", "reduce-overhead" (forward and backward as CUDA
    # graphs) or "step-graph" (compiled; the whole step, all-reduce and Adam included, as one CUDA graph)
    compile: str = "none"
    num_workers: int = 0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    noise_predictor: NoisePredictorConfig = field(default_factory=NoisePredictorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        def build(klass, values):
            names = {f.name: f for f in dataclasses.fields(klass)}
            unknown = set(values) - set(names)
            if unknown:
                raise ValueError(f"unknown {klass.__name__} fields {sorted(unknown)}; expected some of {sorted(names)}")
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return klass(**kwargs)

        return cls(
            data=build(DataConfig, d.get("data", {})),
            denoiser=build(DenoiserConfig, d.get("denoiser", {})),
            noise_predictor=build(NoisePredictorConfig, d.get("noise_predictor", {})),
            diffusion=build(DiffusionConfig, d.get("diffusion", {})),
            train=build(TrainConfig, d.get("train", {})),
        )

    def synced(self) -> "Config":
        """Return a copy whose model sizes follow the data (D, T, t_his, refiner DCT size)."""
        d = self.data
        den = dataclasses.replace(
            self.denoiser, input_feats=d.dim, t_his=d.t_his, t_total=d.t_total,
            refine_n_pre=min(self.denoiser.refine_n_pre, d.t_total) if self.denoiser.refine_n_pre else d.t_total,
        )
        npc = dataclasses.replace(self.noise_predictor, input_feats=d.dim, n_pre=den.n_pre)
        return dataclasses.replace(self, denoiser=den, noise_predictor=npc)


def _h36m() -> Config:
    data = DataConfig()
    return Config(data=data).synced()


def _amass() -> Config:
    data = DataConfig(
        name="amass", data_dir="data/amass", fps=60.0, t_his=30, t_pred=120, num_joints=21,
        train_splits=("ACCAD", "BMLhandball", "BMLmovi", "BMLrub", "CMU", "EKUT", "EyesJapanDataset",
                      "KIT", "PosePrior", "TCDHands", "TotalCapture", "HumanEva", "HDM05", "SFU", "MoSh"),
        test_splits=("DFaust", "DanceDB", "GRAB", "HUMAN4D", "SOMA", "SSM", "Transitions"),
        stride=60, aug=30, multimodal_threshold=0.4,
    )
    cfg = Config(data=data, denoiser=DenoiserConfig(refine_n_pre=150))
    return cfg.synced()


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
                         gcn_hidden=32, gcn_layers=1, gcn_dropout=0.0, refine_n_pre=45)
    npc = NoisePredictorConfig(hidden=64, layers=2)
    train = TrainConfig(batch_size=16, num_epoch=15, lr=1e-3, milestones=(10,), gamma=0.5,
                        metrics_epoch=0, save_model_interval=0)
    return Config(data=data, denoiser=den, noise_predictor=npc, train=train).synced()


PRESETS = {"h36m": _h36m, "amass": _amass, "deepmimic": _deepmimic}


def preset(name: str) -> Config:
    """The published settings of a dataset (`h36m`, `amass`) or the embedded default (`deepmimic`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown cfg {name!r}; choose one of {sorted(PRESETS)}") from None
