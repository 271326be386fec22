"""The renderer: frames and GIFs of history + K futures, window picking, and `spard render` on a tiny checkpoint."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from spard.checkpoints import save_checkpoint
from spard.cli import main
from spard.data.deepmimic import skeleton
from spard.model import SPARD
from spard.render import body_centred, pick_windows, render_frames, save_gif, save_mp4, to_world


def poses(shape: tuple, seed: int = 0) -> np.ndarray:
    """Absolute positions: a body ~1 m tall around a root at x = 2 (world).  [*shape, 18, 3]"""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-0.3, 0.3, shape + (18, 3)).astype(np.float32)
    out[..., 2] += 0.8
    out[..., 0] += 2.0
    return out


def test_gif_has_one_frame_per_step(tmp_path):
    n, k, t_his, t_pred, step = 2, 2, 5, 6, 2
    frames = render_frames(poses((n, t_his)), poses((n, k, t_pred), 1), skeleton(), ["walk", "run"],
                           truth=poses((n, t_pred), 2), step=step, dpi=30)
    assert len(frames) == len(range(0, t_his + t_pred, step)) == 6
    path = save_gif(frames, tmp_path / "out" / "p.gif", fps=15)
    with Image.open(path) as gif:
        assert gif.n_frames == 6 and gif.size == frames[0].size and gif.info["loop"] == 0
        # history frames are grey, future frames hold the blue and red of the futures
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("RGB")).astype(int)
    blue_red = lambda im: (np.abs(im[..., 0] - im[..., 2]) > 80).sum()  # noqa: E731
    assert blue_red(first.astype(int)) == 0 and blue_red(last) > 20


def test_mismatched_inputs_and_no_ffmpeg(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="disagree"):
        render_frames(poses((2, 5)), poses((3, 2, 6)), skeleton(), ["a", "b"])
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert save_mp4([Image.new("RGB", (8, 8))], tmp_path / "x.mp4", fps=15) is None
    assert not (tmp_path / "x.mp4").exists()


def test_mp4_goes_through_ffmpeg(tmp_path, monkeypatch):
    """A stand-in ffmpeg that stores its raw input where the MP4 should go: size, rate and frames arrive."""
    fake = tmp_path / "ffmpeg"
    fake.write_text('#!/bin/sh\necho "$@" > "$0.args"\nfor last; do :; done\ncat > "$last"\n')
    fake.chmod(0o755)
    monkeypatch.setattr("shutil.which", lambda name: str(fake))
    frames = [Image.new("RGB", (9, 7), (i, 0, 0)) for i in range(3)]
    path = save_mp4(frames, tmp_path / "x.mp4", fps=15)
    assert path.stat().st_size == 3 * 9 * 7 * 3
    args = (tmp_path / "ffmpeg.args").read_text()
    assert "-s 9x7" in args and "-r 15" in args and "yuv420p" in args


def test_layouts_and_window_picking():
    rel = poses((3,))
    rel[:, 1:] -= rel[:, :1]
    world = to_world(rel)
    np.testing.assert_allclose(world[:, 1:] - world[:, :1], rel[:, 1:], atol=1e-6)
    centred = body_centred(world)
    assert np.allclose(centred[:, 0, :2], 0) and np.allclose(centred[..., 2], world[..., 2])
    labels = np.array([0, 0, 1, 1, 1, 3, 3, 5])
    picks = pick_windows(labels, 3)
    assert len(picks) == 3 and len({labels[i] for i in picks}) == 3
    assert pick_windows(labels, 10) == [1, 3, 6, 7] + [0, 2, 4, 5]  # every class, then the others


def test_render_command_writes_a_gif_for_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "np" / "np_ckpt.pt"
    save_checkpoint(ckpt, SPARD(tiny_config("deepmimic")), "np")
    out = tmp_path / "pics" / "r.gif"
    args = ["render", "--ckpt", str(tmp_path / "np"), "--windows", "0,50", "--num_samples", "2", "--step", "5",
            "--dpi", "30", "--out", str(out)]
    assert main(args) == 0
    assert "2 windows x 2 futures" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.n_frames == len(range(0, 45, 5))
    assert main(args) == 2  # never replaced without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(args[:-2] + ["--windows", "999", "--out", str(tmp_path / "s.gif")]) == 2
    assert "window 999 does not exist" in capsys.readouterr().err
