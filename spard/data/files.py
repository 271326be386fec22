"""Reading dataset files: nothing in a file can run code, and a file that is malformed is refused in one line.

Every reader of `spard.data` opens its files through here:

    read_json(path, fix)             JSON; duplicate keys and deep nesting refused
    read_csv(path)                   the rows of a text CSV file
    read_npz_object(path, name)      the pickled object of an npz member, unpickled with an allow-list
    open_zarr(path, fix).read(fix)   a zarr array whose metadata passes an allow-list and whose chunks are all there

The rule for formats that can carry code (pickle inside npz, codecs named by zarr metadata): an allow-list is
checked before anything is decoded, so what is not on it is refused unread, never called. Each refusal is a
`ValueError` whose message is one line naming the file and what to do.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 160 characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def shown(name) -> str:
    """A name read from a file, fit for a one-line message (its repr when it holds line breaks or the like)."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def first_repeated(items):
    """The first item that occurs a second time in `items`, or None when each occurs once."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def find_file(given: str | None, folder: Path, name: str) -> Path | None:
    """`given` (must exist), else `<folder>/<name>` when present, else None."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: fix the path given for {name}, or leave it unset "
                                    f"to use {folder / name} when present")
        return path
    path = folder / name
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------------------ text


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    twice = first_repeated(key for key, _ in pairs)
    if twice is not None:
        raise _DuplicateKey(f"key {shown(twice)!r} appears twice in one object")
    return dict(pairs)


def read_json(path: Path, fix: str) -> object:
    """The JSON document of a file (trailing NUL padding ignored); `fix` ends each one-line refusal."""
    try:
        text = Path(path).read_bytes().rstrip(b"\x00").decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:  # json.loads would keep the last value silently
        raise ValueError(f"{path}: {e}, so its meaning is ambiguous; {fix}") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be the expected JSON; {fix}") from None
    except (ValueError, OSError) as e:  # not UTF-8, not JSON, unreadable
        raise ValueError(f"{path} is not valid JSON ({first_line(e)}); {fix}") from None


def read_csv(path: Path) -> list[list[str]]:
    """The non-empty rows of a CSV file; a one-line ValueError when it is not readable text CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            return [row for row in csv.reader(f) if row]
    except (csv.Error, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path} is not a readable CSV text file ({first_line(e)})") from None


# ------------------------------------------------------------------------------------------------ npz

_RECONSTRUCT, _SCALAR = np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]
# the globals a pickled dict of numpy arrays needs (numpy 1 and 2 module names), and nothing that runs code
_SAFE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                 **{(m, "_reconstruct"): _RECONSTRUCT for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
                 **{(m, "scalar"): _SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")}}


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something that could run code."""


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


def read_npz_object(path: Path, name: str) -> tuple[list[str], object]:
    """(the array names of an npz, the object stored as `name`, or None when absent).

    Unpickles numpy arrays, dtypes and scalars in plain containers only; anything else is refused unread.
    One-line ValueErrors for that, for an archive naming a member twice (two readers could see two different
    files) and for a damaged file.
    """
    damaged = "{path} is corrupt or truncated ({detail}): download or convert it again"
    try:
        npz = zipfile.ZipFile(path)
    except Exception as e:  # noqa: BLE001 - not a zip, truncated, unreadable, ...
        raise ValueError(damaged.format(path=path, detail=first_line(e))) from None
    with npz:
        members = [m.removesuffix(".npy") for m in npz.namelist()]
        twice = first_repeated(members)
        if twice is not None:
            raise ValueError(f"{path} holds two members named {shown(twice)!r}: it is damaged or forged; "
                             "convert the data again")
        if name not in members:
            return members, None
        try:
            with npz.open(f"{name}.npy") as f:
                return members, _read_npy_object(f)
        except _Refused as e:
            raise ValueError(f"{path}: refusing to unpickle {name} ({e}); use a file of plain arrays") from None
        except Exception as e:  # noqa: BLE001 - truncated member, garbled header or pickle, ...
            raise ValueError(damaged.format(path=path, detail=first_line(e))) from None


# ------------------------------------------------------------------------------------------------ zarr

# Codecs that only decompress or reorder bytes. Anything else named by a store's metadata (pickle, object
# codecs, filters, sharding, storage transformers) is refused before zarr sees the store.
V2_COMPRESSORS = ("blosc", "zstd", "gzip", "zlib", "lz4", "bz2", "lzma")
V3_CODECS = ("bytes", "transpose", "blosc", "zstd", "gzip", "crc32c")
V3_DATA_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64")


def _refuse(path: Path, what: str, fix: str) -> ValueError:
    return ValueError(f"{path}: {what}; spard reads only plain numeric zarr arrays, checked before any chunk is "
                      f"decoded: {fix}")


def _ints(value, positive: bool) -> bool:
    return isinstance(value, list) and all(type(v) is int and (v > 0 if positive else v >= 0) for v in value)


def _object(value) -> dict:
    """`value` when it is a JSON object, else {} (a metadata entry absent or malformed)."""
    return value if isinstance(value, dict) else {}


def _v2_layout(path: Path, fix: str) -> tuple[np.dtype, list[int], list[int], str, str]:
    meta = read_json(path / ".zarray", fix)
    if not isinstance(meta, dict) or meta.get("zarr_format") != 2:
        raise _refuse(path, ".zarray is not zarr v2 array metadata", fix)
    compressor, filters = meta.get("compressor"), meta.get("filters")
    if compressor is not None and not (isinstance(compressor, dict) and compressor.get("id") in V2_COMPRESSORS):
        name = compressor.get("id") if isinstance(compressor, dict) else compressor
        raise _refuse(path, f"compressor {shown(name)!r} is not one of {', '.join(V2_COMPRESSORS)}", fix)
    if filters not in (None, []):
        names = [f.get("id") if isinstance(f, dict) else f for f in filters] if isinstance(filters, list) else filters
        raise _refuse(path, f"it declares filters {shown(names)} (pickle and object codecs can run code)", fix)
    separator, order = meta.get("dimension_separator", "."), meta.get("order", "C")
    if not isinstance(meta.get("dtype"), str) or order not in ("C", "F") or separator not in (".", "/"):
        raise _refuse(path, f"dtype {shown(meta.get('dtype'))}, order {shown(order)} or dimension "
                            f"separator {shown(separator)} is not a plain numeric layout", fix)
    try:
        dtype = np.dtype(meta["dtype"])
    except (TypeError, ValueError):
        raise _refuse(path, f"dtype {shown(meta['dtype'])!r} is not a numpy dtype", fix) from None
    return dtype, meta.get("shape"), meta.get("chunks"), "", separator


def _v3_layout(path: Path, fix: str) -> tuple[np.dtype, list[int], list[int], str, str]:
    meta = read_json(path / "zarr.json", fix)
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise _refuse(path, "zarr.json is not zarr v3 array metadata", fix)
    codecs = meta.get("codecs")
    names = [c.get("name") if isinstance(c, dict) else c for c in codecs] if isinstance(codecs, list) else [codecs]
    refused = [name for name in names if name not in V3_CODECS]
    if refused:
        raise _refuse(path, f"codec {shown(refused[0])!r} is not one of {', '.join(V3_CODECS)}", fix)
    if meta.get("storage_transformers") not in (None, []):
        raise _refuse(path, "it declares storage transformers", fix)
    if meta.get("data_type") not in V3_DATA_TYPES:
        raise _refuse(path, f"data type {shown(meta.get('data_type'))!r} is not a plain number type", fix)
    grid, encoding = _object(meta.get("chunk_grid")), _object(meta.get("chunk_key_encoding"))
    if grid.get("name") != "regular" or encoding.get("name") not in ("default", "v2"):
        raise _refuse(path, "its chunk grid is not regular or its chunk key encoding is unknown", fix)
    default = encoding["name"] == "default"
    separator = _object(encoding.get("configuration")).get("separator", "/" if default else ".")
    if separator not in ("/", "."):
        raise _refuse(path, f"chunk key separator {shown(separator)!r} is neither '/' nor '.'", fix)
    chunks = _object(grid.get("configuration")).get("chunk_shape")
    return np.dtype(meta["data_type"]), meta.get("shape"), chunks, "c" if default else "", separator


@dataclass(frozen=True)
class ZarrArray:
    """A zarr array whose metadata passed the allow-list; `read()` decodes it."""

    path: Path
    zarr_format: int  # 2 or 3
    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # a regular grid
    key_prefix: str  # of every chunk key: "c" (v3 default encoding) or ""
    separator: str  # between the parts of a chunk key: "." or "/"

    def chunk_keys(self) -> Iterator[str]:
        """The store key of every chunk, lazily: "0.1.2" (v2), "c/0/1/2" (v3 default), "0" (0-d v2)."""
        for index in itertools.product(*(range(math.ceil(s / c)) for s, c in zip(self.shape, self.chunks))):
            parts = ([self.key_prefix] if self.key_prefix else []) + [str(i) for i in index]
            yield self.separator.join(parts) or "0"

    def read(self, fix: str) -> np.ndarray:
        """The whole array; refused first when a chunk is missing (zarr would read it as fill values, zeros that
        look like data)."""
        present = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        total = math.prod(math.ceil(s / c) for s, c in zip(self.shape, self.chunks))
        for key in itertools.islice(self.chunk_keys(), len(present) + 1):  # one more than present: a gap shows
            if key not in present:
                raise ValueError(f"{self.path} is incomplete: chunk {key!r} of {total} is missing and would read as "
                                 "zeros; copy or convert the store again")
        zarr = _zarr()
        try:
            with warnings.catch_warnings():  # zarr's notes on odd metadata: a failure is one line below
                warnings.simplefilter("ignore")
                return zarr.open_array(str(self.path), mode="r", zarr_format=self.zarr_format)[...]
        except Exception as e:  # noqa: BLE001 - corrupt or truncated chunks, ...
            raise ValueError(f"{self.path} cannot be read as a zarr array ({first_line(e)}): {fix}") from None


def _zarr():
    """The zarr module, 3.1 or later (imported only when a store is read: only AMASS users need it)."""
    try:
        import zarr
    except ImportError:
        zarr = None
    if zarr is None or tuple(int(v) for v in re.findall(r"\d+", zarr.__version__)[:2]) < (3, 1):
        raise ValueError("reading zarr stores (AMASS) needs zarr >= 3.1 and numcodecs >= 0.16.6, on Python 3.11 or "
                         "later: pip install 'zarr>=3.1' 'numcodecs>=0.16.6'")
    return zarr


def open_zarr(path: Path, fix: str) -> ZarrArray:
    """The metadata of a zarr array (v2 `.zarray` or v3 `zarr.json`), refused in one line unless it names only
    allow-listed codecs, a plain numeric dtype and a regular chunk grid. Nothing is decoded."""
    if (path / "zarr.json").is_file():
        zarr_format, (dtype, shape, chunks, prefix, separator) = 3, _v3_layout(path, fix)
    elif (path / ".zarray").is_file():
        zarr_format, (dtype, shape, chunks, prefix, separator) = 2, _v2_layout(path, fix)
    else:
        raise ValueError(f"{path} has no .zarray or zarr.json: it is not a zarr array; {fix}")
    if not (_ints(shape, positive=False) and _ints(chunks, positive=True) and len(shape) == len(chunks)):
        raise _refuse(path, f"shape {shown(shape)} and chunks {shown(chunks)} are not a regular grid", fix)
    if dtype.kind not in "biuf":
        raise _refuse(path, f"dtype {dtype} is not a plain number type", fix)
    return ZarrArray(path, zarr_format, dtype, tuple(shape), tuple(chunks), prefix, separator)
