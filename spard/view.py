"""An interactive 3D view of predictions, as one self-contained HTML page.

    spard view --predictions predictions.npz --out page.html
    spard view --ckpt results/demo/np --windows 3,40 --out page.html

The page shows the history, the K futures and the ground truth of each window in 3D: a time slider,
play/pause, a window picker, a futures picker (all at once or one), orbit controls (drag to turn,
scroll to zoom, right-drag to pan) and a legend. It opens from `file://` with no server and no
network: the motion (JSON, millimetres), three.js (MIT licence; the unmodified files under
`spard/static/three/`, gzip-compressed and base64-encoded) and the viewer script
(`spard/static/view.js`) are all inside the file. The page needs WebGL 2, JavaScript modules and
`DecompressionStream` (current browsers have them; the tests open it in headless Chromium).
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
from pathlib import Path
from string import Template

import numpy as np

from .arguments import Parser
from .predictions import Predictions, write_atomically
from .render import FUTURE, HISTORY, TRUTH, add_source_flags, bones_of, output_path, read_source, side_of, \
    source_file

STATIC = Path(__file__).parent / "static"
# three.js in load order: (name, file, the module specifier it imports, the name of the module that gives it)
MODULES = (("core", "three/three.core.js", None, None),
           ("three", "three/three.module.js", "./three.core.js", "core"),
           ("controls", "three/OrbitControls.js", "three", "three"))
MAX_POSITIONS = 10_000_000  # joint positions in one page (about 10 bytes each in the page)


def page_data(predictions: Predictions, title: str) -> dict:
    """What the viewer script reads: skeleton, colours, and per window the poses as flat millimetres."""
    p = predictions
    mm = lambda a: np.round(a * 1000).astype(np.int64).ravel().tolist()  # noqa: E731 - [frames, J, 3] -> flat
    windows = [{"name": name, "history": mm(p.history[i]), "futures": [mm(f) for f in p.futures[i]],
                "truth": None if p.ground_truth is None else mm(p.ground_truth[i])} for i, name in enumerate(p.names)]
    return {"title": title, "fps": p.fps, "t_his": p.t_his, "t_pred": p.t_pred, "sampler": p.sampler,
            "checkpoint": p.checkpoint_sha256, "joints": p.joint_names, "bones": bones_of(p.skeleton).tolist(),
            "sides": side_of(p.skeleton),
            "colours": {"history": HISTORY, "future": FUTURE, "truth": TRUTH}, "windows": windows}


def _module_scripts() -> str:
    """The three.js files as `<script data-module>` elements: gzip + base64, unpacked by the viewer."""
    scripts = []
    for name, file, imports, source in MODULES:
        text = (STATIC / file).read_bytes()
        if imports is not None and f"from '{imports}'".encode() not in text:
            raise RuntimeError(f"{file} no longer imports '{imports}': update spard.view.MODULES for this three.js")
        packed = base64.b64encode(gzip.compress(text, compresslevel=9, mtime=0)).decode()
        links = f' data-imports="{imports}" data-from="{source}"' if imports else ""
        scripts.append(f'<script type="application/gzip" data-module="{name}"{links}>{packed}</script>')
    return "\n".join(scripts)


def page(predictions: Predictions, title: str = "spard predictions") -> str:
    """The whole HTML page for `predictions`."""
    p = predictions
    positions = p.num_windows * (p.t_his + p.t_pred * (p.num_samples + (p.ground_truth is not None))) * \
        p.futures.shape[3]
    if positions > MAX_POSITIONS:
        raise ValueError(f"{p.num_windows} windows x {p.num_samples} futures are {positions / 1e6:.0f} million joint "
                         f"positions, too many for one page (at most {MAX_POSITIONS / 1e6:.0f} million): choose "
                         f"fewer with --windows 0,1,2 or --num_samples 10")
    motion = json.dumps(page_data(p, title), separators=(",", ":"))  # "<" escaped below: no tag can end the script
    escape = lambda text: text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
    return Template((STATIC / "view.html").read_text()).substitute(
        title=escape(title), motion=motion.replace("<", "\\u003c"), modules=_module_scripts(),
        app=(STATIC / "view.js").read_text())


def write_page(predictions: Predictions, path: str | Path, title: str = "spard predictions") -> Path:
    """Write the page to `path` (atomically: a failure leaves any earlier file as it was)."""
    html = page(predictions, title).encode()
    return write_atomically(path, lambda f: f.write(html))


# ------------------------------------------------------------------------------------------ command

def parser() -> argparse.ArgumentParser:
    p = Parser(prog="spard view", description=__doc__.split("\n\n")[0],
               epilog="Open the page in a browser; it needs no server and no network.",
               replaces="an existing output file")
    add_source_flags(p, samples=10)
    p.add_argument("--out", default=None,
                   help="output page (default: view.html beside the checkpoint, or the predictions file's name .html)")
    p.add_argument("--title", default=None, help="the page's title (default: the input file's name)")
    return p


def run(args) -> Path:
    source = source_file(args)
    out = output_path(args, source, "view.html")
    predictions = read_source(args, source, samples=10)
    written = write_page(predictions, out, title=args.title or f"spard: {source.name}")
    print(f"wrote {written} ({predictions.num_windows} windows x {predictions.num_samples} futures, sampler "
          f"{predictions.sampler}, {written.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return written
