"""`spard predict`: motion files (Human3.6M npz, arrays, CSV, BVH) in, a predictions file out, on a tiny model."""
import hashlib
import json
import re

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import tiny_config
from spard.api import Predictor
from spard.checkpoints import save_checkpoint
from spard.cli import main
from spard.data.h36m import read_positions
from spard.data.skeletons import H36M, H36M_KEPT
from spard.model import SPARD
from spard.predictions import Predictions

K = 5
CMU_FILE = "data_3d_h36m.npz"
WALK = ("S9", "Walking 5")  # 137 frames at 50 fps


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny untrained Human3.6M-shaped model (t_his 25, t_pred 100, 17 joints, K = 5), np stage."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("predict") / "np_ckpt.pt"
    save_checkpoint(path, SPARD(tiny_config()), "np")
    return path


@pytest.fixture
def walk(cmu_dir) -> np.ndarray:
    """The 17 kept joints of a real CMU walk, metres, z up, 50 fps.  [137, 17, 3] float32"""
    return read_positions(cmu_dir / CMU_FILE)[WALK[0]][WALK[1]][:, H36M_KEPT]


def predict(ckpt, source, out, *options) -> Predictions:
    """Runs `spard predict`; the predictions file it wrote."""
    code = main(["predict", "--ckpt", str(ckpt), "--input", str(source), "--out", str(out), "--num_samples", str(K),
                 *map(str, options)])
    assert code == 0
    return Predictions.load(out) if str(out).endswith(".npz") else json.loads(out.read_text())


def refused(capsys, ckpt, source, out, *options) -> str:
    """Runs `spard predict` expecting a refusal: exit 2, one line on stderr, nothing written."""
    capsys.readouterr()
    code = main(["predict", "--ckpt", str(ckpt), "--input", str(source), "--out", str(out), *map(str, options)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


# ------------------------------------------------------------------------------------------------ CMU data

def test_cmu_npz_round_trip(ckpt, cmu_dir, walk, tmp_path):
    out = tmp_path / "walk.npz"
    p = predict(ckpt, cmu_dir / CMU_FILE, out, "--subject", WALK[0], "--action", WALK[1], "--stride", 25,
                "--ground_truth")
    # one window of 125 frames fits the 137, at frame 0; the file is at the checkpoint's 50 fps: no resampling
    assert p.futures.shape == (1, K, 100, 17, 3) and p.futures.dtype == np.float32
    np.testing.assert_array_equal(p.history[0], walk[:25])  # metres, z up, the 17 kept joints, as in the file
    np.testing.assert_array_equal(p.ground_truth[0], walk[25:125])
    # the futures overlay the history: every future starts from (and keeps) the last observed root
    np.testing.assert_array_equal(p.futures[0, :, :, 0], np.broadcast_to(walk[24, 0], (K, 100, 3)))
    assert np.isfinite(p.futures).all()
    assert (p.joint_names, p.parents.tolist(), p.left_joints.tolist(), p.right_joints.tolist()) == \
        (H36M.names, H36M.parents, H36M.left, H36M.right)
    assert (p.fps, p.sampler, p.window_names) == (50.0, "np", ["S9/Walking 5 @ 0.00 s"])
    assert p.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_all_recordings_and_seeded_sampling(ckpt, cmu_dir, tmp_path):
    source = cmu_dir / CMU_FILE
    every = predict(ckpt, source, tmp_path / "s11.npz", "--subject", "S11")
    recordings = list(read_positions(source)["S11"])
    assert every.futures.shape == (len(recordings), K, 100, 17, 3)  # the last 25 frames of each recording
    assert [name.split(" @ ")[0] for name in every.window_names] == [f"S11/{a}" for a in recordings]
    runs = [predict(ckpt, source, tmp_path / f"{i}.npz", "--action", "Walking 4", "--sampler", "ddim", "--seed", seed)
            for i, seed in enumerate((3, 3, 4))]  # "Walking 4" is a recording of S11 only
    assert runs[0].window_names == ["S11/Walking 4 @ 2.14 s"] and runs[0].sampler == "ddim"
    np.testing.assert_array_equal(runs[0].futures, runs[1].futures)
    assert not np.allclose(runs[0].futures, runs[2].futures)


def test_arrays_csv_and_json(ckpt, walk, tmp_path):
    """The same motion as an array file, a CSV with a header, and a 20-joint array with a joint map."""
    np.save(tmp_path / "walk.npy", walk)
    header = ",".join(f"{name}_{axis}" for name in H36M.names for axis in "xyz")
    np.savetxt(tmp_path / "walk.csv", walk.reshape(len(walk), -1), delimiter=",", header=header, comments="",
               fmt="%.9g")
    wide = np.concatenate([walk, walk[:, :3] + 0.5], axis=1)[:, ::-1]  # [137, 20, 3]: joints reversed, 3 extra
    np.save(tmp_path / "wide.npy", wide)
    (tmp_path / "map.json").write_text(json.dumps({name: 19 - i for i, name in enumerate(H36M.names)}))

    array = predict(ckpt, tmp_path / "walk.npy", tmp_path / "a.npz")
    assert array.window_names == ["walk @ 2.24 s"]  # the last 25 of 137 frames
    np.testing.assert_array_equal(array.history[0], walk[-25:])
    text = predict(ckpt, tmp_path / "walk.csv", tmp_path / "c.json")
    np.testing.assert_allclose(text["futures"], array.futures, atol=2e-6)
    np.testing.assert_allclose(text["history"], array.history, atol=2e-6)
    assert text["joint_names"] == H36M.names and "ground_truth" not in text
    mapped = predict(ckpt, tmp_path / "wide.npy", tmp_path / "m.npz", "--joint_map", tmp_path / "map.json")
    np.testing.assert_array_equal(mapped.futures, array.futures)


# ------------------------------------------------------------------------------------------------ BVH

# A CMU-named skeleton (centimetres, y up, facing +z, its left at +x): (joint, parent, offset). The names
# fit both the CMU and the Human3.6M namings; CMU knows more of them, so its spine ("Spine") is used.
BODY = [("Hips", None, (0, 0, 0)),
        ("LHipJoint", "Hips", (5, -5, 0)), ("LeftUpLeg", "LHipJoint", (4, -3, 0)), ("LeftLeg", "LeftUpLeg", (0, -42, 0)),
        ("LeftFoot", "LeftLeg", (0, -41, 0)),
        ("RHipJoint", "Hips", (-5, -5, 0)), ("RightUpLeg", "RHipJoint", (-4, -3, 0)),
        ("RightLeg", "RightUpLeg", (0, -42, 0)), ("RightFoot", "RightLeg", (0, -41, 0)),
        ("LowerBack", "Hips", (0, 5, 0)), ("Spine", "LowerBack", (0, 12, 0)), ("Spine1", "Spine", (0, 12, 0)),
        ("Neck", "Spine1", (0, 12, 0)), ("Neck1", "Neck", (0, 5, 0)), ("Head", "Neck1", (0, 5, 0)),
        ("LeftShoulder", "Spine1", (3, 10, 0)), ("LeftArm", "LeftShoulder", (15, 0, 0)),
        ("LeftForeArm", "LeftArm", (28, 0, 0)), ("LeftHand", "LeftForeArm", (25, 0, 0)),
        ("RightShoulder", "Spine1", (-3, 10, 0)), ("RightArm", "RightShoulder", (-15, 0, 0)),
        ("RightForeArm", "RightArm", (-28, 0, 0)), ("RightHand", "RightForeArm", (-25, 0, 0))]
END_SITES = {"Head": (0, 18, 0), "LeftFoot": (0, -5, 12), "RightFoot": (0, -5, 12), "LeftHand": (8, 0, 0),
             "RightHand": (-8, 0, 0)}
FPS, SECONDS, SPEED, HEIGHT = 120, 3.0, 120.0, 95.0  # a walk forward along +z at 1.2 m/s, hips 95 cm high
ARM = (-60.0, 30.0)  # the left upper arm's Zrotation and Yrotation (degrees), held


def swing(t):
    """The left thigh's rotation about x, degrees (the right one swings the other way)."""
    return 20 * np.sin(2 * np.pi * t)


def write_bvh(path, rename=lambda name: name, frame_time=1 / FPS):
    """The walk as a BVH file: root channels position + ZXY rotation, joints ZXY rotations."""
    lines, order = ["HIERARCHY"], []

    def block(name, depth):
        pad = "  " * depth
        parent, offset = next((p, o) for n, p, o in BODY if n == name)
        kind = "ROOT" if parent is None else "JOINT"
        channels = "6 Xposition Yposition Zposition" if parent is None else "3"
        lines.extend([f"{pad}{kind} {rename(name)}", f"{pad}{{", f"{pad}  OFFSET {' '.join(map(str, offset))}",
                      f"{pad}  CHANNELS {channels} Zrotation Xrotation Yrotation"])
        order.append(name)
        for child in [n for n, p, _ in BODY if p == name]:
            block(child, depth + 1)
        if name in END_SITES:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {' '.join(map(str, END_SITES[name]))}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    block("Hips", 0)
    t = np.arange(int(SECONDS * FPS)) / FPS
    values = np.zeros((len(t), 3 + 3 * len(order)))
    values[:, 1], values[:, 2] = HEIGHT, SPEED * t
    values[:, 3 + 3 * order.index("LeftUpLeg") + 1] = swing(t)
    values[:, 3 + 3 * order.index("RightUpLeg") + 1] = -swing(t)
    values[:, 3 + 3 * order.index("LeftArm") + np.array([0, 2])] = ARM  # Zrotation, Yrotation
    lines += ["MOTION", f"Frames: {len(t)}", f"Frame Time: {frame_time:.10f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bvh_round_trip(ckpt, tmp_path):
    p = predict(ckpt, write_bvh(tmp_path / "walk.bvh"), tmp_path / "walk.npz", "--seed", 1)
    # 360 frames at 120 fps are 150 at 50 fps; the window is frames 125..149: 2.50 to 2.98 s
    assert p.futures.shape == (1, K, 100, 17, 3) and p.window_names == ["walk @ 2.50 s"] and p.fps == 50
    t = np.arange(125, 150) / 50
    history = p.history[0]  # [25, 17, 3] centimetres, y up, as the file
    np.testing.assert_allclose(history[:, 0], np.stack([0 * t, HEIGHT + 0 * t, SPEED * t], -1), atol=1e-3)
    left_hip = history[:, 0] + [9, -8, 0]  # LHipJoint + LeftUpLeg offsets
    np.testing.assert_allclose(history[:, 4], left_hip, atol=1e-3)
    a = np.radians(swing(t))  # the thigh turned about x: (0, -42, 0) -> (0, -42 cos a, -42 sin a)
    knee = left_hip + np.stack([0 * a, -42 * np.cos(a), -42 * np.sin(a)], -1)
    np.testing.assert_allclose(history[:, 5], knee, atol=0.05)  # 120 -> 50 fps interpolation error ~0.005 cm
    np.testing.assert_allclose(history[:, 7], history[:, 0] + [0, 17, 0], atol=1e-3)  # CMU spine: top of LowerBack
    np.testing.assert_allclose(history[:, 10], history[:, 0] + [0, 69, 0], atol=1e-3)  # head: its End Site
    shoulder = history[:, 0] + [18, 39, 0]  # LowerBack + Spine + Spine1 + LeftShoulder + LeftArm offsets
    np.testing.assert_allclose(history[:, 11], shoulder, atol=1e-3)
    arm = Rotation.from_euler("ZXY", [ARM[0], 0, ARM[1]], degrees=True).as_matrix()  # intrinsic, channel order
    np.testing.assert_allclose(history[:, 12], shoulder + arm @ [28, 0, 0], atol=1e-3)  # the elbow
    # the futures overlay the history in the file's frame: root held at the last observed one (exactly)
    np.testing.assert_array_equal(p.futures[0, :, :, 0], np.broadcast_to(history[-1, 0], (K, 100, 3)))
    # they are the model's futures for the history in metres with z up, brought back to centimetres, y up
    to_model = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]) / 100  # (x, y, z) cm -> (x, -z, y) m
    model = Predictor.from_checkpoint(ckpt).predict(history @ to_model.T, num_samples=K, seed=1)[0]  # [K, 100, 17, 3]
    back = (model - model[:, :, :1]) @ np.linalg.inv(to_model).T + history[-1, 0]
    np.testing.assert_allclose(p.futures[0], back, atol=1e-3)
    # the file records its frame, and what render and view draw is back in metres with z up
    assert (p.units, p.up) == (0.01, "y")
    drawn = p.in_metres_z_up()
    np.testing.assert_allclose(drawn.history[0], history @ to_model.T, atol=1e-5)
    np.testing.assert_allclose(drawn.futures[0], p.futures[0] @ to_model.T, atol=1e-5)
    assert (drawn.units, drawn.up) == (1.0, "z") and drawn.history[0, :, 0, 2].min() > 0.5  # the root above the floor

    # the same skeleton under other names, mapped by a joint map, gives the same predictions
    renamed = write_bvh(tmp_path / "renamed.bvh", rename=lambda name: f"rig:{name}")
    cmu = {"hip": "Hips", "right_hip": "RightUpLeg", "right_knee": "RightLeg", "right_ankle": "RightFoot",
           "left_hip": "LeftUpLeg", "left_knee": "LeftLeg", "left_ankle": "LeftFoot", "spine": "Spine",
           "thorax": "Neck", "neck": "Head", "head": "Head_end", "left_shoulder": "LeftArm",
           "left_elbow": "LeftForeArm", "left_wrist": "LeftHand", "right_shoulder": "RightArm",
           "right_elbow": "RightForeArm", "right_wrist": "RightHand"}
    (tmp_path / "rig.json").write_text(json.dumps({k: f"rig:{v}" for k, v in cmu.items()}))
    again = predict(ckpt, renamed, tmp_path / "renamed.npz", "--seed", 1, "--joint_map", tmp_path / "rig.json")
    np.testing.assert_array_equal(again.futures, p.futures)


# ------------------------------------------------------------------------------------------------ refusals

def test_bad_inputs_are_refused_in_one_line(ckpt, cmu_dir, walk, tmp_path, capsys):
    out = tmp_path / "out.npz"

    def saved(name, array):
        np.save(tmp_path / name, array)
        return tmp_path / name

    nan = walk.copy()
    nan[100, 3, 1] = np.nan
    cases = [
        (saved("wide.npy", np.zeros((40, 20, 3))), (), "holds 20 joints, but the h36m checkpoint expects 17 joints "
         r"\(or the 32 of its file layout\) at 50 fps: hip, right_hip"),
        (saved("short.npy", walk[:10]), (), "10 frames at 50 fps, but the checkpoint needs t_his=25"),
        (saved("short2.npy", walk[:60]), ("--ground_truth",), r"60 frames .* t_his=25 \+ t_pred=100"),
        (saved("nan.npy", nan), (), "1 frame .first: 100. with NaN"),
        (saved("mm.npy", walk * 1000), (), "the body spans 1.5.* m.*looks like mm: pass --input_units mm"),
        (saved("walk.npy", walk), ("--input_units", "cm"), "read as cm, the body spans 0.01"),
        (saved("walk.npy", walk), ("--input_units", "furlongs"), "--input_units 'furlongs'"),
        (saved("walk.npy", walk), ("--input_fps", 20), "at 20 fps, too coarse.*50 fps"),
        (saved("walk.npy", walk), ("--input_fps", 1000), "moves at .* m/s.*check the frame rate .1000 fps given."),
        (cmu_dir / CMU_FILE, ("--subject", "S2"), "has no subject 'S2'; it has S1, S5"),
        (cmu_dir / CMU_FILE, ("--subject", "S9", "--action", "Walking 1"), "has no action 'Walking 1' for S9"),
        (saved("walk.npy", walk), ("--subject", "S9"), "--subject and --action pick sequences"),
        (saved("walk.npy", walk), ("--joint_map", tmp_path / "missing.json"), "missing.json"),
        (saved("walk.npy", walk), ("--device", "tpu:9"), "device 'tpu:9'"),
        (saved("walk.npy", walk), ("--out", tmp_path / "out.txt"), r"--out must end in \.npz"),
    ]
    for source, options, message in cases:
        assert re.search(message, refused(capsys, ckpt, source, out, *options)), message

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    assert "holds pickled Python objects, which are never loaded" in refused(capsys, ckpt, tmp_path / "objects.npy", out)
    assert "holds no frames" in refused(capsys, ckpt, saved("empty.npy", walk[:0]), out)
    (tmp_path / "odd.csv").write_text("1,2,3,4\n5,6,7,8\n")
    assert "4 columns, not a multiple of 3" in refused(capsys, ckpt, tmp_path / "odd.csv", out)
    (tmp_path / "walk.txt").write_text("1 2 3\n")
    assert "unknown motion file type '.txt'" in refused(capsys, ckpt, tmp_path / "walk.txt", out)
    (tmp_path / "bad.bvh").write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0\n}\n")
    assert "bad.bvh is not a BVH file that can be read" in refused(capsys, ckpt, tmp_path / "bad.bvh", out)
    anonymous = write_bvh(tmp_path / "anon.bvh", rename=lambda name: f"j{[n for n, _, _ in BODY].index(name)}")
    err = refused(capsys, ckpt, anonymous, out)
    assert "match none of the namings known for the h36m checkpoint (checkpoint, CMU, CMU ASF, Human3.6M" in err
    assert "--joint_map" in err
    (tmp_path / "typo.json").write_text(json.dumps({name: "Hips" for name in H36M.names} | {"knee": "x"}))
    assert "the joint map names knee, unknown" in refused(capsys, ckpt, anonymous, out, "--joint_map",
                                                          tmp_path / "typo.json")
    (tmp_path / "wrong.json").write_text(json.dumps({name: "Knee" for name in H36M.names}))
    assert "has no joint 'Knee'" in refused(capsys, ckpt, anonymous, out, "--joint_map", tmp_path / "wrong.json")
    assert "at 2 fps, too coarse" in refused(capsys, ckpt, write_bvh(tmp_path / "slow.bvh", frame_time=0.5), out)

    out.write_bytes(b"earlier")
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(saved("walk.npy", walk)), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"earlier"
