"""Reader of GSPS / VideoPose3D `data_3d_h36m.npz` files (formats.md §1): Human3.6M or any data in its format.

`positions_3d` is a dict subject -> action -> `[L, 32, 3]` world positions (metres, z up, 50 Hz). We keep
the 17 joints of `skeletons.H36M_KEPT`, in file order. The class of a sequence is its action name up to
the first space (`'Discussion 2' -> 'Discussion'`).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..config import DataConfig
from ..metrics import H36M_CLASSES, H36M_CMD_REFERENCE
from .dataset import Clip, Dataset
from .protocol import build_dataset, choose_classes, shown
from .skeletons import H36M, H36M_KEPT, root_relative

FILE = "data_3d_h36m.npz"
HOW_TO = ("prepare it with VideoPose3D's data/prepare_data_h36m.py (the file GSPS, CoMusion and SPARD read), "
          "or point --data_dir to the folder holding it")


_RECONSTRUCT, _SCALAR = np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]
# the globals a pickled dict of numpy arrays needs (numpy 1 and 2 module names), and nothing that runs code
_SAFE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                 **{(m, "_reconstruct"): _RECONSTRUCT for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
                 **{(m, "scalar"): _SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")}}


class _Refused(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays inside dicts and lists only: any other global is refused, never called."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise _Refused(f"it holds {module}.{name}, which could run code") from None


def _read_npy_object(f) -> object:
    """The object of an object-dtype `.npy` member (unpickled safely), or a note of what it holds instead."""
    version = npy_format.read_magic(f)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if not dtype.hasobject:
        return f"a {dtype} array of shape {list(shape)}"
    array = _ArrayUnpickler(f).load()
    return array.item() if isinstance(array, np.ndarray) and array.shape == () else array


def _read_member(path: Path, name: str) -> tuple[list[str], object]:
    """(the array names of an npz, the object stored as `name` or None when absent)."""
    with zipfile.ZipFile(path) as npz:
        members = [m.removesuffix(".npy") for m in npz.namelist()]
        if name not in members:
            return members, None
        with npz.open(f"{name}.npy") as f:
            return members, _read_npy_object(f)


def read_positions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The `positions_3d` dict of a GSPS-format npz, read without running code from the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {HOW_TO}")
    try:
        members, data = _read_member(path, "positions_3d")
    except _Refused as e:
        raise ValueError(f"{path}: refusing to unpickle positions_3d ({e}); use a file of plain arrays") from None
    except Exception as e:  # noqa: BLE001 - not a zip, truncated, garbled pickle, ...
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"{path} is corrupt or truncated ({detail}): download or convert it again") from None
    if "positions_3d" not in members:
        keys = ", ".join(map(shown, members))
        raise ValueError(f"{path} has no 'positions_3d' (keys: {keys}): it is not a GSPS-format file; {HOW_TO}")
    if not (isinstance(data, dict) and all(isinstance(actions, dict) for actions in data.values())):
        what = shown(data) if isinstance(data, str) else type(data).__name__
        raise ValueError(f"{path}: positions_3d is {what}, expected a dict subject -> action -> [L, 32, 3] array; "
                         f"{HOW_TO}")
    return data


def read_clips(data: dict, subjects: tuple[str, ...], path: Path) -> list[tuple[tuple[str, str], np.ndarray]]:
    """((subject, action), poses `[L, 17, 3]` root-relative) of the subjects, in file order."""
    clips = []
    for subject in subjects:
        if subject not in data:
            has = ", ".join(map(shown, data))
            raise ValueError(f"subject {subject!r} is not in {path} (it has {has}): fix train_splits/test_splits")
        for action, positions in data[subject].items():
            where = f"{path.name} {shown(subject)}/{shown(action)}"
            if not isinstance(positions, np.ndarray) or positions.dtype.kind not in "fiu":
                what = positions.dtype if isinstance(positions, np.ndarray) else type(positions).__name__
                raise ValueError(f"{where} holds {what}, expected a float array [L, 32, 3] of positions in metres")
            if positions.ndim != 3 or positions.shape[1:] != (32, 3):
                shape = list(positions.shape)
                raise ValueError(f"{where} has shape {shape}, expected [L, 32, 3] (the 32 Human3.6M joints); "
                                 f"convert the data with all 32 joints")
            clips.append(((subject, str(action)), root_relative(positions[:, H36M_KEPT], where)))
    return clips


def load_h36m(cfg: DataConfig) -> Dataset:
    """The Dataset of a GSPS-format npz: `cfg.data_dir` is its folder (or the file itself)."""
    path = Path(cfg.data_dir)
    path = path if path.suffix == ".npz" else path / FILE
    data = read_positions(path)
    train, test = read_clips(data, cfg.train_splits, path), read_clips(data, cfg.test_splits, path)
    category = {key: key[1].split(" ")[0] for key, _ in train + test}
    found = sorted(set(category.values()))
    if found == sorted(H36M_CLASSES):  # the real Human3.6M: the published class ids and CMD reference
        default, published_cmd = list(H36M_CLASSES), dict(zip(H36M_CLASSES, H36M_CMD_REFERENCE))
    else:
        default, published_cmd = found, {}
    classes, cmd_reference, note = choose_classes(cfg, path.parent, default, published_cmd)
    label = {name: i for i, name in enumerate(classes)}

    def clips(pairs):
        return [Clip(key, label[category[key]], poses) for key, poses in pairs]

    return build_dataset(cfg, path.parent, H36M, classes, cmd_reference, clips(train), clips(test), [note])

