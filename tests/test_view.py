"""`spard view`: what the page holds, the command's errors, and the page itself in headless Chromium.

The browser test drives Debian's Chromium (`apt-get install chromium`) through Playwright (the dev
extra); under CI=1 it fails when either is missing, elsewhere it is skipped with the reason.
"""
import base64
import gzip
import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import missing, require, tiny_config
from spard.checkpoints import save_checkpoint
from spard.cli import main
from spard.model import SPARD
from spard.predictions import Predictions, file_sha256
from spard.view import MODULES, STATIC, page, page_data

PARENTS = [-1, 0, 1, 1, 1, 0, 0]  # pelvis, neck, head, left hand, right hand, left foot, right foot


def stick(arm_degrees: float, x: float, height: float = 1.0) -> np.ndarray:
    """A stick figure standing at (x, 0), arms at `arm_degrees` above horizontal.  [7, 3] metres"""
    a = np.radians(arm_degrees)
    neck = np.array([x, 0, 1.5 * height])
    arm = 0.6 * height * np.array([np.cos(a), 0, np.sin(a)])
    return np.stack([[x, 0, height], neck, neck + [0, 0, 0.25 * height], neck + arm, neck + arm * [-1, 1, 1],
                     [x + 0.15, 0, 0.05], [x - 0.15, 0, 0.05]])


def figures(windows: int = 2, k: int = 3, t_his: int = 6, t_pred: int = 8) -> Predictions:
    """Stick figures walking along x; each future raises the arms to its own height (the root stays put)."""
    history, truth, futures = [], [], []
    for w in range(windows):
        h = 1.0 + 0.2 * w
        history.append([stick(-70, 0.05 * f, h) for f in range(t_his)])
        truth.append([stick(-70 + 60 * (f + 1) / t_pred, 0.05 * (t_his + f), h) for f in range(t_pred)])
        last_x = 0.05 * (t_his - 1)
        futures.append([[stick(-70 + (50 + 50 * s) * (f + 1) / t_pred, last_x, h) for f in range(t_pred)]
                        for s in range(k)])
    return Predictions(futures=np.array(futures), history=np.array(history), ground_truth=np.array(truth),
                       joint_names=["pelvis", "neck", "head", "left_hand", "right_hand", "left_foot", "right_foot"],
                       parents=np.array(PARENTS), left_joints=np.array([3, 5]), right_joints=np.array([4, 6]),
                       fps=10.0, sampler="np", checkpoint_sha256="0f" * 32,
                       window_names=[f"wave #{w}" for w in range(windows)])


def motion_of(text: str) -> dict:
    found = re.search(r'<script id="motion" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


# ------------------------------------------------------------------------------------------ the page

def test_page_holds_the_motion_in_millimetres_and_nothing_to_fetch():
    p = figures()
    text = page(p, title="waves & <arms>")
    motion = motion_of(text)
    assert motion == json.loads(json.dumps(page_data(p, "waves & <arms>")))
    win = motion["windows"][1]
    assert win["name"] == "wave #1" and len(win["futures"]) == 3
    assert win["history"][:3] == [0, 0, 1200]  # pelvis of window 1 (1.2 m tall) at its first frame
    assert win["futures"][2][-3:] == [100, 0, 50]  # right foot at the end of future 3: x = 0.25 - 0.15 m
    np.testing.assert_array_equal(np.array(win["truth"]).reshape(8, 7, 3), np.round(p.ground_truth[1] * 1000))
    assert motion["bones"] == [[1, 0], [2, 1], [3, 1], [4, 1], [5, 0], [6, 0]]
    assert motion["sides"] == ["centre", "centre", "centre", "left", "right", "left", "right"]
    assert "<title>waves &amp; &lt;arms&gt;</title>" in text
    assert not re.search(r"\s(src|href)\s*=", text)  # nothing loaded from anywhere
    assert "$motion" not in text and "$modules" not in text and "$app" not in text


def test_window_names_cannot_close_the_script():
    p = figures()
    p.window_names = ["</script><script>alert(1)</script>", "<!-- b"]
    text = page(p)
    blob = re.search(r'<script id="motion" type="application/json">(.*?)</script>', text, re.S).group(1)
    assert "<" not in blob  # no tag can start inside the data
    assert [w["name"] for w in motion_of(text)["windows"]] == p.window_names


def test_three_js_travels_unmodified():
    text = page(figures())
    table = (STATIC / "three" / "README.md").read_text()
    for name, file, _, _ in MODULES:
        packed = re.search(rf'<script type="application/gzip" data-module="{name}"[^>]*>([^<]*)<', text).group(1)
        original = (STATIC / file).read_bytes()
        assert gzip.decompress(base64.b64decode(packed)) == original
        assert hashlib.sha256(original).hexdigest() in table  # the vendored file is the one the table names
    assert (STATIC / "three" / "LICENSE").read_text().startswith("The MIT License")


def test_too_big_a_page_is_refused(monkeypatch):
    monkeypatch.setattr("spard.view.MAX_POSITIONS", 500)  # the page would hold 2 x (6 + 8 x 4) x 7 = 532
    with pytest.raises(ValueError, match=r"2 windows x 3 futures are 0 million joint positions, too many .* --windows"):
        page(figures())


# ------------------------------------------------------------------------------------------ the command

def test_view_command_and_its_errors(tmp_path, capsys):
    figures().save(tmp_path / "p.npz")
    out = tmp_path / "page.html"
    args = ["view", "--predictions", str(tmp_path / "p.npz"), "--out", str(out)]
    assert main(args) == 0
    assert "2 windows x 3 futures, sampler np" in capsys.readouterr().out
    first = out.read_text()
    assert len(motion_of(first)["windows"]) == 2
    elsewhere = ["--out", str(tmp_path / "other.html")]
    for extra, message in [([], f"{out} already exists; pass --overwrite"),
                           (["--out", str(tmp_path / "page.htm")], "--out must name a .html file"),
                           (elsewhere + ["--num_samples", "4"], "4 futures asked for, the file holds 3"),
                           (elsewhere + ["--windows", "0,x"], "--windows expects indices like 3,17,40"),
                           (elsewhere + ["--seed", "3"], "--seed only apply with --ckpt")]:
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert out.read_text() == first and not (tmp_path / "other.html").exists()  # nothing replaced or written
    assert main(args + ["--overwrite", "--windows", "1", "--num_samples", "2", "--no_ground_truth"]) == 0
    motion = motion_of(out.read_text())
    assert [w["name"] for w in motion["windows"]] == ["wave #1"] and len(motion["windows"][0]["futures"]) == 2
    assert motion["windows"][0]["truth"] is None
    np.savez(tmp_path / "bad.npz", futures=np.zeros((1, 1, 2, 3, 3), np.float32))
    assert main(["view", "--predictions", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "is not a predictions file: missing history" in err and err.count("\n") == 1
    assert not (tmp_path / "bad.html").exists()


def test_a_file_in_centimetres_with_y_up_shows_the_same_page(tmp_path, capsys):
    """`spard predict` keeps a BVH file's centimetres and y axis; the page shows the motion as in metres, z up."""
    import dataclasses

    metres = figures()
    to_file = lambda a: np.stack([a[..., 0], a[..., 2], -a[..., 1]], -1) * 100  # noqa: E731 - (x, y, z) m -> cm, y up
    cm = dataclasses.replace(metres, futures=to_file(metres.futures), history=to_file(metres.history),
                             ground_truth=to_file(metres.ground_truth), units=0.01, up="y")
    pages = {}
    for name, p in (("m", metres), ("cm", cm)):
        p.save(tmp_path / f"{name}.npz")
        assert main(["view", "--predictions", str(tmp_path / f"{name}.npz")]) == 0
        pages[name] = motion_of((tmp_path / f"{name}.html").read_text())
    capsys.readouterr()
    assert pages["cm"]["title"] == "spard: cm.npz" and pages["m"]["title"] == "spard: m.npz"
    for w_cm, w_m in zip(pages["cm"]["windows"], pages["m"]["windows"], strict=True):
        for key in ("history", "futures", "truth"):  # millimetres; float32 cm -> m may round 1 mm the other way
            assert np.abs(np.array(w_cm[key]) - np.array(w_m[key])).max() <= 1, key


def test_view_command_predicts_dataset_windows(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "np" / "np_ckpt.pt"
    save_checkpoint(ckpt, SPARD(tiny_config("deepmimic")), "np")
    assert main(["view", "--ckpt", str(tmp_path / "np"), "--windows", "0,50", "--num_samples", "2"]) == 0
    motion = motion_of((tmp_path / "np" / "view.html").read_text())
    assert motion["checkpoint"] == file_sha256(ckpt) and motion["sampler"] == "np"
    assert [len(w["futures"]) for w in motion["windows"]] == [2, 2]
    assert all(re.fullmatch(r"\w+ #(0|50)", w["name"]) for w in motion["windows"])


# ------------------------------------------------------------------------------------------ the browser

@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium driven by Playwright."""
    sync_playwright = require("playwright.sync_api").sync_playwright
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing("Chromium is not installed: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


def classes(shot: bytes) -> dict[str, np.ndarray]:
    """Masks of the screenshot's pixels by colour: the futures' blue and red (also where translucent), the
    truth's green, and dark grey (the history; also the futures' spine)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = rgb.max(-1) - rgb.min(-1)
    return {"blue": (b > r + 30) & (b > g + 10), "red": (r > g + 40) & (r > b + 40),
            "green": (g > r + 30) & (g > b + 30), "grey": (spread < 12) & (rgb.max(-1) < 125)}


def test_page_in_headless_chromium(tmp_path, chromium):
    p = figures()
    path = tmp_path / "page.html"
    path.write_text(page(p))
    context = chromium.new_context(offline=True, viewport={"width": 640, "height": 480})
    tab = context.new_page()
    problems, requests = [], []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.on("request", lambda r: requests.append(r.url))
    tab.goto(path.as_uri())
    tab.wait_for_function("document.body.dataset.ready === 'true'", timeout=15_000)
    assert tab.title() == "spard predictions"

    tab.click("#play")  # it starts playing; pause it to look at chosen frames
    assert tab.inner_text("#play") == "play"

    def look(frame: int | None = None) -> dict:
        if frame is not None:
            tab.fill("#slider", str(frame))
            tab.wait_for_function(f"document.body.dataset.frame === '{frame}'")
        return classes(tab.screenshot(style=".box { visibility: hidden }"))  # the scene only, no legend

    observed = look(2)
    assert observed["grey"].sum() > 300
    assert observed["blue"].sum() + observed["red"].sum() + observed["green"].sum() < 20
    assert "history 0.30 s" in tab.inner_text("#clock")

    end = p.t_his + p.t_pred - 1
    everything = look(end)
    assert everything["blue"].sum() > 300 and everything["red"].sum() > 300 and everything["green"].sum() > 300
    assert "prediction +0.80 s" in tab.inner_text("#clock")

    tab.select_option("#sample", "0")
    low = look()
    tab.select_option("#sample", "2")
    high = look()
    for one in (low, high):
        assert 0 < one["blue"].sum() < everything["blue"].sum()
    assert (low["blue"] ^ high["blue"]).sum() > 200  # the arms moved: another future is drawn

    tab.uncheck("#truth")
    assert look()["green"].sum() < 20
    tab.check("#truth")
    tab.select_option("#window", "1")
    assert (look()["blue"] ^ high["blue"]).sum() > 200  # the taller figure of window 1

    tab.click("#play")
    tab.wait_for_function(f"document.body.dataset.frame !== '{end}'", timeout=5_000)  # playing moves on
    assert problems == []
    assert all(url.startswith(("file:", "blob:", "data:")) for url in requests), requests
    context.close()
