"""The Python API: `Predictor.from_checkpoint(...).predict(history, num_samples)` on a tiny DeepMimic-sized model."""
import numpy as np
import pytest
import torch

from conftest import published_np, randomized, tiny_config, with_np_noise
from spard import Predictor
from spard.data.skeletons import H36M, H36M_KEPT
from spard.metrics import apd
from spard.checkpoints import CheckpointError, save_checkpoint
from spard.model import SPARD

K = 5


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """`<dir>/np/np_ckpt.pt` and `<dir>/distill/distill_ckpt.pt` of one tiny untrained model (K = 5) with
    the published noise predictor (deterministic maps; the `h36m` fixture has the default, noisy one)."""
    torch.manual_seed(0)
    model = SPARD(published_np(tiny_config("deepmimic")))
    root = tmp_path_factory.mktemp("api")
    save_checkpoint(root / "np" / "np_ckpt.pt", model, "np")
    save_checkpoint(root / "distill" / "distill_ckpt.pt", model, "distill")
    return root


@pytest.fixture(scope="module")
def predictor(ckpt_dir):
    return Predictor.from_checkpoint(ckpt_dir / "np" / "np_ckpt.pt")


def history_of(p: Predictor, batch: tuple = (), frames: int | None = None, dtype=np.float32) -> np.ndarray:
    """Absolute positions: a root walking along x, joints scattered around it.  [*batch, frames, J, 3]"""
    rng = np.random.default_rng(1)
    frames = frames or p.t_his
    poses = rng.normal(0, 0.3, batch + (frames, p.num_joints, 3))
    poses[..., 0, :] = 0.0
    poses[..., :, 0, 0] = np.linspace(0, 1, frames)  # root x
    poses[..., 0, 2] += 0.9  # root height
    poses[..., 1:, :] += poses[..., :1, :]
    return poses.astype(dtype)


def test_shapes_and_types(predictor):
    p = predictor
    assert (p.t_his, p.t_pred, p.num_joints, p.sampler) == (15, 30, 18, "np")
    one = p.predict(history_of(p), num_samples=K)
    assert isinstance(one, np.ndarray) and one.dtype == np.float32
    assert one.shape == (1, K, p.t_pred, p.num_joints, 3)
    batch = p.predict(history_of(p, (3,), dtype=np.float64), num_samples=2)
    assert batch.shape == (3, 2, p.t_pred, p.num_joints, 3) and batch.dtype == np.float64
    out = p.predict(torch.from_numpy(history_of(p, (2,))), num_samples=K)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (2, K, p.t_pred, p.num_joints, 3)
    assert np.isfinite(one).all()


def test_longer_history_uses_its_last_frames(predictor):
    p = predictor
    long = history_of(p, frames=p.t_his + 7)
    np.testing.assert_allclose(p.predict(long, num_samples=K), p.predict(long[-p.t_his:], num_samples=K))


def test_root_held_at_last_observed_position(predictor):
    p = predictor
    history = history_of(p, (2,))
    out = p.predict(history, num_samples=K)
    expected = np.broadcast_to(history[:, None, None, -1, 0], out[..., 0, :].shape)
    np.testing.assert_array_equal(out[..., 0, :], expected)
    # the predicted joints sit around that root, not around the world origin
    spread = np.linalg.norm(out[..., 1:, :] - out[..., :1, :], axis=-1)
    assert spread.mean() < np.linalg.norm(history[:, -1, 0]).mean() + 5


def test_np_is_deterministic_and_ddim_follows_the_seed(predictor):
    p = predictor
    history = history_of(p)
    a = p.predict(history, num_samples=K, seed=0)
    np.testing.assert_array_equal(a, p.predict(history, num_samples=K, seed=None))
    np.testing.assert_allclose(a[:, :2], p.predict(history, num_samples=2), atol=1e-5)  # the first noise maps
    d0 = p.predict(history, num_samples=3, sampler="ddim", seed=0)
    np.testing.assert_array_equal(d0, p.predict(history, num_samples=3, sampler="ddim", seed=0))
    assert not np.array_equal(d0, p.predict(history, num_samples=3, sampler="ddim", seed=1))


def test_stage_folder_and_results_folder(ckpt_dir, predictor):
    history = history_of(predictor)
    for where in (ckpt_dir / "np", ckpt_dir):
        np.testing.assert_array_equal(Predictor.from_checkpoint(where).predict(history, num_samples=K),
                                      predictor.predict(history, num_samples=K))
    distilled = Predictor.from_checkpoint(ckpt_dir / "distill")
    assert distilled.sampler == "onestep"
    assert distilled.predict(history, num_samples=2).shape == (1, 2, 30, 18, 3)


def one_line_error(call, match: str):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_bad_histories_give_one_clear_value_error(predictor):
    p = predictor
    good = history_of(p)
    nan = good.copy()
    nan[3, 4, 1] = np.nan
    cases = [
        (good[:, :-1], r"\[t_his=15, J=18, 3\]"),  # wrong joint count
        (good[0], r"\[t_his=15, J=18, 3\]"),  # one frame without its time axis
        (good[None, None], r"got \[1, 1, 15, 18, 3\]"),
        (nan, "NaN or infinite"),
        (good[:5], "5 frames.*t_his=15"),
        (good.astype(np.int64), "floating-point"),
        (torch.from_numpy(good).int(), "floating-point"),
        (good.tolist(), "numpy array or torch tensor"),
    ]
    for history, match in cases:
        one_line_error(lambda: p.predict(history, num_samples=2), match)


def test_bad_options_and_checkpoints(ckpt_dir, predictor, tmp_path):
    history = history_of(predictor)
    one_line_error(lambda: predictor.predict(history, num_samples=K + 1), f"at most K={K}")
    one_line_error(lambda: predictor.predict(history, num_samples=0), "num_samples")
    one_line_error(lambda: predictor.predict(history, sampler="nope"), "unknown sampler")
    distilled = Predictor.from_checkpoint(ckpt_dir / "distill" / "distill_ckpt.pt")
    one_line_error(lambda: distilled.predict(history, sampler="np"), "which a 'distill' result does not hold")
    one_line_error(lambda: Predictor.from_checkpoint(tmp_path / "missing.pt"), "does not exist")
    with pytest.raises(CheckpointError, match="holds none of"):
        Predictor.from_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------------------
# the skeleton, the dataset file's layout, and what the last prediction was

def test_skeleton_is_exposed(predictor):
    from spard.data.deepmimic import skeleton

    p = predictor
    assert (p.dataset, p.fps, p.t_his, p.t_pred) == ("deepmimic", 30.0, 15, 30)
    assert p.joint_names == skeleton().names and p.parents == skeleton().parents
    assert p.kept == list(range(18)) and p.file_num_joints == 18


@pytest.fixture(scope="module")
def h36m():
    torch.manual_seed(0)
    return Predictor(randomized(SPARD(tiny_config("h36m"))), "np")


def test_human36m_file_layout_in_kept_joints_out(h36m):
    assert (h36m.joint_names, h36m.parents, h36m.kept, h36m.file_num_joints) == \
        (H36M.names, H36M.parents, H36M_KEPT, 32)
    rng = np.random.default_rng(0)
    raw = (rng.normal(0, 0.3, (2, 30, 32, 3)) + [0, 0, 1]).astype(np.float32)  # 30 frames of the 32 joints
    out = h36m.predict(raw, num_samples=3)
    assert out.shape == (2, 3, 100, 17, 3)  # the 17 kept joints
    np.testing.assert_array_equal(out, h36m.predict(raw[:, :, H36M_KEPT], num_samples=3))
    torch_out = h36m.predict(torch.from_numpy(raw[0]), num_samples=3)
    np.testing.assert_allclose(torch_out.numpy(), out[:1], atol=1e-5)  # a batch of one: other float rounding
    one_line_error(lambda: h36m.predict(raw[:, :, :20], num_samples=2),
                   r"got \[2, 30, 20, 3\]; J may also be 32, the dataset file's layout")


def test_last_tells_sampler_and_diversity(h36m):
    history = (np.random.default_rng(1).normal(0, 0.3, (3, 25, 17, 3)) + [0, 0, 1]).astype(np.float32)
    out = h36m.predict(history, num_samples=4, sampler="ddim", seed=7)
    last = h36m.last
    assert (last.sampler, last.num_samples, last.seed, last.apd.shape) == ("ddim", 4, 7, (3,))
    relative = torch.from_numpy(out[..., 1:, :] - out[..., :1, :]).flatten(-2)  # [B, K, t_pred, D]
    np.testing.assert_allclose(last.apd, apd(relative).numpy(), rtol=1e-5)
    assert (last.apd > 0).all()
    h36m.predict(history, num_samples=1)
    assert (h36m.last.sampler, h36m.last.seed) == ("np", 0) and np.isnan(h36m.last.apd).all()  # one future: no APD
    # the default noise predictor adds noise: more than K futures, following the seed
    k = h36m.model.cfg.noise_predictor.k
    many = h36m.predict(history, num_samples=k + 3, seed=4)
    assert many.shape[1] == k + 3 and (h36m.last.apd > 0).all()
    np.testing.assert_array_equal(many, h36m.predict(history, num_samples=k + 3, seed=4))
    assert not np.array_equal(many, h36m.predict(history, num_samples=k + 3, seed=5))
    published = Predictor(with_np_noise(h36m.model, 0.0), "np")
    published.predict(history, num_samples=2)
    assert published.last.seed is None  # deterministic maps draw nothing


def test_batches_are_cut_without_changing_the_futures(h36m):
    """A history's noise depends on the seed and its place in the batch, not on how the batch is cut."""
    history = (np.random.default_rng(2).normal(0, 0.3, (5, 25, 17, 3)) + [0, 0, 1]).astype(np.float32)
    whole = h36m.predict(history, num_samples=3, sampler="onestep", seed=5)
    for batch_size in (1, 2):
        np.testing.assert_allclose(h36m.predict(history, num_samples=3, sampler="onestep", seed=5,
                                                batch_size=batch_size), whole, atol=1e-5)
    np.testing.assert_allclose(h36m.predict(history[0], num_samples=3, sampler="onestep", seed=5), whole[:1],
                               atol=1e-5)


def test_implausible_histories_and_options_are_refused(h36m, ckpt_dir):
    history = (np.random.default_rng(3).normal(0, 0.3, (25, 17, 3)) + [0, 0, 1]).astype(np.float32)
    one_line_error(lambda: h36m.predict(np.full((25, 17, 3), 1e20)), r"root lies 1e\+20 m from the origin")
    one_line_error(lambda: h36m.predict(history * 1000), r"a joint .* m from the root.*in metres")
    far_joint = history.copy()
    far_joint[:, 5] = 1e20
    one_line_error(lambda: h36m.predict(far_joint), "from the root")
    for seed in (2 ** 64, -1):
        one_line_error(lambda: h36m.predict(history, seed=seed), f"seed {seed} is out of range")
    for device in ("nope", "cuda:99" if torch.cuda.is_available() else "cuda"):
        one_line_error(lambda: Predictor.from_checkpoint(ckpt_dir / "np", device=device), f"device '{device}'")


def test_non_finite_futures_are_never_returned(ckpt_dir):
    broken = Predictor.from_checkpoint(ckpt_dir / "np")
    with torch.no_grad():
        next(broken.model.denoiser.parameters()).fill_(float("inf"))
    history = np.zeros((15, 18, 3), np.float32) + [0, 0, 0.9]
    one_line_error(lambda: broken.predict(history, num_samples=2), "non-finite futures")
    assert broken.last is None


def test_ddim_uses_the_checkpoints_guidance(predictor):
    """Predictor samples with the run's settings (SamplerOptions.from_config), not the sampler's defaults."""
    import dataclasses

    cfg = predictor.model.cfg
    cfg_09 = dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, guidance=0.9))
    weak, strong = SPARD(cfg), SPARD(cfg_09)
    randomized(weak)  # random weights: the condition matters
    strong.load_state_dict(weak.state_dict())
    history = history_of(predictor)
    got = [Predictor(m, "np").predict(history, 2, sampler="ddim", seed=3) for m in (weak, strong)]
    assert not np.allclose(got[0], got[1]), "the guidance weight of the checkpoint's config was ignored"


@pytest.mark.parametrize("sampler", ["onestep", "np"])
def test_many_futures_of_one_history_are_split_into_calls_alike(h36m, monkeypatch, sampler):
    """Futures beyond ROWS_PER_CALL are sampled in several network calls (np: in multiples of K, so each call
    cycles through the K maps from the first): the same futures and APD as one call, memory near the output's."""
    import spard.api as api

    history = (np.random.default_rng(2).normal(0, 0.3, (2, 25, 17, 3)) + [0, 0, 1]).astype(np.float32)
    k = h36m.model.cfg.noise_predictor.k
    whole = h36m.predict(history, num_samples=3 * k + 1, sampler=sampler, seed=3)
    spread = h36m.last.apd
    calls = []
    sample = api.SamplerOptions.sample
    monkeypatch.setattr(api.SamplerOptions, "sample", lambda self, *a, **kw: calls.append(self.num_samples) or
                        sample(self, *a, **kw))
    monkeypatch.setattr(api, "ROWS_PER_CALL", k + 2)
    split = h36m.predict(history, num_samples=3 * k + 1, sampler=sampler, seed=3)
    assert calls == 2 * ([k] * 3 + [1] if sampler == "np" else [k + 2] * 2 + [k - 3])  # each history, in calls
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)  # other batch sizes: other rounding
    np.testing.assert_allclose(h36m.last.apd, spread, rtol=1e-5)
