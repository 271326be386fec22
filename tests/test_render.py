"""The renderer: frames, GIFs and single pictures of history + K futures, fitted panels, and `spard render`."""
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from spard.checkpoints import save_checkpoint
from spard.cli import main
from spard.data.deepmimic import skeleton
from spard.model import SPARD
from spard.predictions import Predictions
from spard.render import (FUTURE, TRUTH, _figure, body_centred, extent, pick_windows, render_frames, render_picture,
                          save_gif, save_mp4, to_world)


def poses(shape: tuple, seed: int = 0) -> np.ndarray:
    """Absolute positions: a body ~1 m tall around a root at x = 2 (world).  [*shape, 18, 3]"""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-0.3, 0.3, shape + (18, 3)).astype(np.float32)
    out[..., 2] += 0.8
    out[..., 0] += 2.0
    return out


def hue(image: np.ndarray, colour: str) -> int:
    """Pixels close to `colour` (#rrggbb), within 40 per channel."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image[..., :3].astype(int) - rgb).max(axis=-1) <= 40).sum())


def test_gif_has_one_frame_per_step(tmp_path):
    n, k, t_his, t_pred, step = 2, 2, 5, 6, 2
    frames = render_frames(poses((n, t_his)), poses((n, k, t_pred), 1), skeleton(), ["walk", "run"],
                           truth=poses((n, t_pred), 2), step=step, dpi=50)
    assert len(frames) == len(range(0, t_his + t_pred, step)) == 6
    path = save_gif(frames, tmp_path / "out" / "p.gif", fps=15)
    with Image.open(path) as gif:
        assert gif.n_frames == 6 and gif.size == frames[0].size and gif.info["loop"] == 0
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("RGB"))
    # the legend shows the futures' blue and red in every frame; the bodies add them only once predicting
    for colour in (FUTURE["left"], FUTURE["right"], TRUTH["left"]):
        assert 0 < hue(first, colour) and hue(first, colour) + 100 < hue(last, colour)


def test_panels_fit_every_pose_and_the_floor():
    """Each window's box holds every frame of history, truth and futures; each panel shows its whole box."""
    history, futures, truth = poses((4,)), poses((3, 5), 1), poses((5,), 2)
    futures[1, 2, 3] += (0.0, 2.5, -1.0)  # one future throws a foot far out and below the floor
    reach, floor, top = extent(body_centred(np.concatenate([history, truth, futures.reshape(-1, 18, 3)])))
    for sequence in [history, truth, *futures]:
        centred = body_centred(sequence)
        assert (np.abs(centred[..., :2]) <= reach).all() and (floor <= centred[..., 2]).all()
        assert (centred[..., 2] <= top).all()
    assert floor == pytest.approx(float(body_centred(futures)[1, 2, 3, 2]))
    canvas, panels, _ = _figure(["a", "b", "c"], ["tall", "wide"], [(0.4, 0.0, 1.9), (2.9, -1.0, 1.1)],
                                {"samples": FUTURE}, dpi=40, panel_inches=1.7)
    canvas.draw()
    from mpl_toolkits.mplot3d import proj3d
    for ax in itertools.chain(*panels):
        corners = np.array(list(itertools.product(ax.get_xlim(), ax.get_ylim(), ax.get_zlim()))).T
        x, y, _ = proj3d.proj_transform(*corners, ax.M)
        pixels = ax.transData.transform(np.c_[x, y])
        assert ax.bbox.contains(pixels[:, 0].min(), pixels[:, 1].min())
        assert ax.bbox.contains(pixels[:, 0].max(), pixels[:, 1].max())
        filled = (pixels.max(0) - pixels.min(0)) / (ax.bbox.width, ax.bbox.height)
        assert filled.max() > 0.9  # fitted, not merely inside


def test_one_picture_for_tensorboard(tmp_path):
    history, futures, truth = poses((5,)), poses((3, 6), 1), poses((6,), 2)
    image = render_picture(history, futures, skeleton(), truth=truth, title="walk #3", fps=30, moments=3, dpi=40)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    fewer = render_picture(history, futures[:1], skeleton(), moments=2, dpi=40)
    assert fewer.shape[0] < image.shape[0] and fewer.shape[1] < image.shape[1]
    assert hue(image, TRUTH["left"]) > 20 and hue(fewer, TRUTH["left"]) == 0  # no ground truth, no green
    with pytest.raises(ValueError, match="disagree"):
        render_picture(history, futures[0], skeleton())
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(tmp_path / "tb") as writer:
        writer.add_image("predictions", image, 0, dataformats="HWC")
    assert any((tmp_path / "tb").iterdir())


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


def test_render_command_for_a_checkpoint(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    ckpt = tmp_path / "np" / "np_ckpt.pt"
    save_checkpoint(ckpt, SPARD(tiny_config("deepmimic")), "np")
    out = tmp_path / "pics" / "r.gif"
    args = ["render", "--ckpt", str(tmp_path / "np"), "--windows", "0,50", "--num_samples", "2", "--step", "5",
            "--dpi", "30", "--out", str(out)]
    monkeypatch.setattr("shutil.which", lambda name: None)  # no ffmpeg: the command says why there is no MP4
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "2 windows x 2 futures" in said and "no MP4 written: ffmpeg is not on the PATH" in said
    with Image.open(out) as gif:
        assert gif.n_frames == len(range(0, 45, 5))
    assert main(args) == 2  # never replaced without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(args[:-2] + ["--windows", "999", "--out", str(tmp_path / "s.gif")]) == 2
    assert "window 999 does not exist" in capsys.readouterr().err


def test_render_command_for_a_predictions_file(tmp_path, capsys):
    history, futures = poses((3, 4)), poses((3, 5, 6), 1)
    sk = skeleton()
    Predictions(futures=futures, history=history, joint_names=sk.names, parents=np.array(sk.parents),
                left_joints=np.array(sk.left), right_joints=np.array(sk.right), fps=30.0, sampler="np",
                window_names=["a", "b", "c"]).save(tmp_path / "p.npz")
    assert main(["render", "--predictions", str(tmp_path / "p.npz"), "--windows", "2", "--dpi", "30"]) == 0
    assert "1 windows x 4 futures, sampler np" in capsys.readouterr().out  # the first 4 of the file's 5
    with Image.open(tmp_path / "p.gif") as gif:  # beside the file, its name
        assert gif.n_frames == len(range(0, 10, 2))
    for extra, message in [(["--sampler", "ddim"], "--sampler only apply with --ckpt"),
                           (["--ckpt", "x"], "give either --predictions FILE.npz or --ckpt"),
                           (["--num_samples", "6", "--out", str(tmp_path / "q.gif")], "6 futures asked for")]:
        assert main(["render", "--predictions", str(tmp_path / "p.npz")] + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
