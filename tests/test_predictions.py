"""The predictions file: exact round trips, atomic writes, and a one-line error for every kind of bad file."""
import dataclasses
import hashlib

import numpy as np
import pytest

from spard.predictions import OPTIONAL, REQUIRED, Predictions, file_sha256, write_atomically


def example(b=2, k=3, t_his=4, t_pred=5, j=4, *, seed=0, **fields) -> Predictions:
    rng = np.random.default_rng(seed)
    values = dict(futures=rng.normal(size=(b, k, t_pred, j, 3)), history=rng.normal(size=(b, t_his, j, 3)),
                  ground_truth=rng.normal(size=(b, t_pred, j, 3)), joint_names=[f"joint {i}" for i in range(j)],
                  parents=np.array([-1] + list(range(j - 1))), left_joints=[1], right_joints=[2, 3], fps=50.0,
                  sampler="np", checkpoint_sha256="ab" * 32, window_names=[f"walk #{i}" for i in range(b)])
    return Predictions(**(values | fields))


def test_round_trip_is_exact(tmp_path):
    p = example()
    path = p.save(tmp_path / "sub" / "p.npz")
    with np.load(path, allow_pickle=False) as archive:  # plain arrays, readable without pickles
        assert sorted(archive.files) == sorted(REQUIRED + OPTIONAL)
        assert archive["futures"].dtype == np.float32 and archive["parents"].dtype == np.int64
    q = Predictions.load(path)
    for name in ("futures", "history", "ground_truth", "parents", "left_joints", "right_joints"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
        assert getattr(q, name).dtype == getattr(p, name).dtype
    assert (q.joint_names, q.window_names, q.fps, q.sampler, q.checkpoint_sha256) == \
           (p.joint_names, p.window_names, 50.0, "np", "ab" * 32)
    assert (q.num_windows, q.num_samples, q.t_his, q.t_pred) == (2, 3, 4, 5)
    assert q.skeleton.parents == [-1, 0, 1, 2] and q.skeleton.left == [1] and q.skeleton.right == [2, 3]


def test_units_and_up_axis_are_kept_and_drawn_in_metres_z_up(tmp_path):
    """A file in centimetres with y up (as `spard predict` writes for BVH input) keeps its frame; what the
    drawing code takes is the same motion in metres with z up: (x, y, z) cm -> (x, -z, y) / 100 m."""
    p = dataclasses.replace(example(), units=0.01, up="y")
    q = Predictions.load(p.save(tmp_path / "cm.npz"))
    assert (q.units, q.up) == (0.01, "y")
    drawn = q.in_metres_z_up()
    for name in ("futures", "history", "ground_truth"):
        a = getattr(q, name)
        np.testing.assert_allclose(getattr(drawn, name), np.stack([a[..., 0], -a[..., 2], a[..., 1]], -1) / 100,
                                   rtol=1e-6)
    assert (drawn.units, drawn.up) == (1.0, "z") and example().in_metres_z_up() is not None
    # a file written before these fields existed is in metres with z up
    with np.load(tmp_path / "cm.npz") as archive:
        np.savez(tmp_path / "old.npz", **{k: archive[k] for k in archive.files if k not in ("units", "up")})
    old = Predictions.load(tmp_path / "old.npz")
    assert (old.units, old.up) == (1.0, "z") and old.in_metres_z_up() is old
    for bad, message in (({"units": 0.0}, "units must be a positive number"), ({"up": "x"}, "up must be 'y' or 'z'")):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(example(), **bad)


def test_optional_fields_and_select(tmp_path):
    q = Predictions.load(example(ground_truth=None, window_names=None).save(tmp_path / "p.npz"))
    assert q.ground_truth is None and q.window_names is None and q.names == ["window 0", "window 1"]
    p = example(b=3, k=4)
    s = p.select([2, 0], samples=2)
    np.testing.assert_array_equal(s.futures, p.futures[[2, 0], :2])
    np.testing.assert_array_equal(s.ground_truth, p.ground_truth[[2, 0]])
    assert s.window_names == ["walk #2", "walk #0"]
    with pytest.raises(ValueError, match=r"window 3 does not exist: the file holds 3 windows \(0..2\)"):
        p.select([0, 3])
    with pytest.raises(ValueError, match="5 futures asked for, the file holds 4"):
        p.select(samples=5)


def test_save_never_replaces_by_accident_and_writes_atomically(tmp_path):
    path = example(seed=1).save(tmp_path / "p.npz")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        example(seed=2).save(path)
    with pytest.raises(ValueError, match="is an .npz file"):
        example().save(tmp_path / "p.json")

    def broken(f):
        f.write(b"half a file")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, broken)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]
    example(seed=2).save(path, overwrite=True)
    assert path.read_bytes() != before
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _fields(p: Predictions) -> dict:
    return dict(futures=p.futures, history=p.history, joint_names=np.array(p.joint_names), parents=p.parents,
                left_joints=p.left_joints, right_joints=p.right_joints, fps=np.array(p.fps),
                sampler=np.array(p.sampler), checkpoint_sha256=np.array(p.checkpoint_sha256))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "none.npz", "does not exist"),
    (lambda d: d, "is a folder: give the .npz file"),
    (lambda d: (d / "t.npz").write_text("futures,history\n") and d / "t.npz", "not an .npz archive"),
    (lambda d: _npz(d / "m.npz", futures=np.zeros((1, 1, 2, 3, 3), np.float32), extra=np.ones(2)),
     "missing history, joint_names, parents, left_joints, right_joints, fps, sampler, checkpoint_sha256 "
     r"\(it holds futures, extra\)"),
    (lambda d: _npz(d / "o.npz", **(_fields(example()) | {"sampler": np.array(["np", None], dtype=object)})),
     "pickled Python objects, which are never loaded"),
    (lambda d: _npz(d / "s.npz", **(_fields(example()) | {"futures": np.zeros((2, 3, 5, 4), np.float32)})),
     r"futures must be \[B, K, t_pred, J, 3\] positions, got shape \[2, 3, 5, 4\]"),
    (lambda d: _npz(d / "b.npz", **(_fields(example()) | {"history": np.zeros((3, 4, 4, 3), np.float32)})),
     r"history is \[3, 4, 4, 3\] but futures are \[2, 3, 5, 4, 3\]"),
    (lambda d: _npz(d / "i.npz", **(_fields(example()) | {"futures": np.zeros((2, 3, 5, 4, 3), np.int64)})),
     "futures must hold floating-point positions in metres, got dtype int64"),
    (lambda d: _npz(d / "n.npz", **(_fields(example()) | {"history": np.full((2, 4, 4, 3), np.nan)})),
     "history contains NaN or infinite positions"),
    (lambda d: _npz(d / "p.npz", **(_fields(example()) | {"parents": np.array([0, 0, 1, 2])})),
     r"parents must give each of the J=4 joints its parent joint: -1 for joint 0"),
    (lambda d: _npz(d / "l.npz", **(_fields(example()) | {"left_joints": np.array([4])})),
     r"left_joints must be joint indices 0..3 \(J=4 joints\), got \[4\]"),
    (lambda d: _npz(d / "j.npz", **(_fields(example()) | {"joint_names": np.array(["a", "b"])})),
     "joint_names must be 4 strings"),
    (lambda d: _npz(d / "f.npz", **(_fields(example()) | {"fps": np.array([50.0, 25.0])})),
     r"fps must be a single value, got an array of shape \[2\]"),
    (lambda d: _npz(d / "z.npz", **(_fields(example()) | {"fps": np.array(0.0)})),
     "fps must be a positive number"),
    (lambda d: _npz(d / "g.npz", **(_fields(example()) | {"ground_truth": np.zeros((2, 4, 4, 3), np.float32)})),
     r"ground_truth is \[2, 4, 4, 3\], expected \[B, t_pred, J, 3\] = \[2, 5, 4, 3\]"),
])
def test_bad_files_get_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as error:
        Predictions.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
