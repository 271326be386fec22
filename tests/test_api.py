"""The Python API: `Predictor.from_checkpoint(...).predict(history, num_samples)` on a tiny DeepMimic-sized model."""
import numpy as np
import pytest
import torch

from conftest import tiny_config
from spard import Predictor
from spard.checkpoints import CheckpointError, save_checkpoint
from spard.model import SPARD

K = 5


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """`<dir>/np/np_ckpt.pt` and `<dir>/distill/distill_ckpt.pt` of one tiny untrained model (K = 5)."""
    torch.manual_seed(0)
    model = SPARD(tiny_config("deepmimic"))
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
    one_line_error(lambda: distilled.predict(history, sampler="np"), "no trained noise predictor")
    one_line_error(lambda: Predictor.from_checkpoint(tmp_path / "missing.pt"), "does not exist")
    with pytest.raises(CheckpointError, match="holds none of"):
        Predictor.from_checkpoint(tmp_path)
