"""Reading arrays from an ``.npz`` safely: by key, header first, never unpickling.

An ``.npz`` is a zip of ``.npy`` files, and ``np.load`` trusts both layers: a member's header
may declare any shape, and its zip entry may inflate to any size (a few MB of zeros can unpack
to 20 GB). Here a member is opened by name and its ``.npy`` header is read *before* any data
is decompressed:

- object dtypes are refused (loading them would unpickle, which can run code);
- shape x itemsize must stay under :func:`max_array_bytes`: 8 GiB, over eight times the
  course's largest array even as float64, raised or lowered with ``ABLATE_MAX_ARRAY_BYTES``;
- the zip entry's declared uncompressed size must equal the header plus shape x itemsize, so
  the entry cannot inflate past what the header announced (``zipfile`` stops at that size
  and checks the CRC at the end).

Members nobody asks for are never opened, so a huge unused member costs nothing.

Example:
    >>> member = open_member("data.npz", "test_set")
    >>> member.shape, member.dtype
    ((1000, 64, 128), dtype('uint8'))
    >>> arrays = read_arrays("data.npz", keys=("training_set", "test_set"), required=("training_set",))
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.lib.format as npy

from ablate.errors import DataError

DEFAULT_MAX_ARRAY_BYTES = 8 * 2**30  # the course's training set is 0.9 GB as float64; 20 GB is a zip bomb
MAX_BYTES_ENV = "ABLATE_MAX_ARRAY_BYTES"
_READ_CHUNK = 16 * 2**20  # bytes decompressed per read while filling an array


def max_array_bytes() -> int:
    """The largest array (in bytes, decompressed) read from an ``.npz``; see the module docstring."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ARRAY_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_BYTES_ENV}={raw!r} is not a positive whole number of bytes; unset it or give e.g. "
                        f"{DEFAULT_MAX_ARRAY_BYTES}.")
    return value


@dataclass(frozen=True)
class Member:
    """One array inside an ``.npz``, known from its header: where it is, its shape and dtype."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def array_keys(path: str | os.PathLike[str]) -> list[str]:
    """The array names in the ``.npz`` at ``path`` (nothing is decompressed)."""
    with _zip(Path(path)) as zf:
        return _keys(zf)


def open_member(path: str | os.PathLike[str], key: str, hint: str = "") -> Member:
    """Reads and checks the header of ``key`` (see the module docstring); raises DataError if unusable.

    Args:
        path: the ``.npz`` file.
        key: the array's name.
        hint: appended to the "no such array" message (what the user can do).
    """
    src = Path(path)
    with _zip(src) as zf:
        return _member(zf, src, key, hint)


def read_header(fp: IO[bytes], src: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open ``.npy`` stream, which is left at the data."""
    try:
        version = npy.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fp)
        else:
            raise DataError(f"'{key}' in '{src}' uses .npy format {version}; expected 1.0 or 2.0: re-save it with "
                            "np.savez.")
    except (ValueError, EOFError) as e:
        raise DataError(f"'{key}' in '{src}' has a corrupt .npy header ({_first_line(e)}); re-export the file.") from e
    if dtype.hasobject:
        raise DataError(f"'{key}' in '{src}' holds an object (pickled) array, which is never loaded (unpickling "
                        "can run code); expected numeric arrays (uint8 or float) saved with np.savez.")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def read_array(member: Member) -> np.ndarray:
    """The whole array of a checked member, decompressed into one buffer of its declared size."""
    buf = np.empty(member.nbytes, np.uint8)
    try:
        with zipfile.ZipFile(member.path) as zf, zf.open(f"{member.key}.npy") as fp:
            read_header(fp, member.path, member.key)
            view, filled = memoryview(buf), 0
            while filled < member.nbytes:
                got = fp.readinto(view[filled : filled + _READ_CHUNK])
                if not got:
                    raise DataError(f"'{member.key}' in '{member.path}' is truncated ({filled} of {member.nbytes} "
                                    "bytes); re-export the file.")
                filled += got
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DataError(f"'{member.key}' in '{member.path}' is not readable ({_first_line(e)}); the .npz is "
                        "corrupt or truncated: re-export it.") from e
    order = "F" if member.fortran else "C"
    return buf.view(member.dtype).reshape(member.shape, order=order)


def read_arrays(path: str | os.PathLike[str], keys: Sequence[str] | None = None, required: Sequence[str] = (),
                hint: str = "") -> dict[str, np.ndarray]:
    """Reads the arrays ``keys`` (all when None) that the file holds; every one in ``required`` must be there.

    Every header is checked before any array is decompressed, so a bad member fails fast.
    """
    src = Path(path)
    with _zip(src) as zf:
        found = _keys(zf)
        for key in required:
            if key not in found:
                raise _missing(src, key, found, hint)
        members = [_member(zf, src, key, hint) for key in (found if keys is None else keys) if key in found]
    return {m.key: read_array(m) for m in members}


# --- helpers -------------------------------------------------------------------------------------

class _zip:
    """``zipfile.ZipFile`` whose failures to open are one-line DataErrors; a context manager."""

    def __init__(self, src: Path) -> None:
        if not src.is_file():
            raise DataError(f"Data file '{src}' not found; expected an .npz archive. Check the path.")
        with src.open("rb") as fh:
            magic = fh.read(6)
        if magic.startswith(b"\x93NUMPY"):
            raise DataError(f"'{src}' is a single .npy array; expected an .npz archive (np.savez) of named arrays.")
        try:
            self.zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"'{src}' is not a readable .npz archive or is truncated ({_first_line(e)}); re-download "
                            "or re-export it with np.savez.") from e

    def __enter__(self) -> zipfile.ZipFile:
        return self.zf

    def __exit__(self, *args: object) -> None:
        self.zf.close()


def _keys(zf: zipfile.ZipFile) -> list[str]:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _missing(src: Path, key: str, found: list[str], hint: str) -> DataError:
    return DataError(f"'{src}' has no '{key}' array (found keys: {sorted(found)[:10]}){'; ' + hint if hint else ''}.")


def _member(zf: zipfile.ZipFile, src: Path, key: str, hint: str) -> Member:
    """The checked header of ``key``: only the header bytes are decompressed."""
    try:
        info = zf.getinfo(f"{key}.npy")
    except KeyError:
        raise _missing(src, key, _keys(zf), hint) from None
    try:
        with zf.open(info) as fp:
            shape, fortran, dtype = read_header(fp, src, key)
            header_bytes = fp.tell()
    except (zipfile.BadZipFile, OSError, zlib.error) as e:
        raise DataError(f"'{key}' in '{src}' is not readable ({_first_line(e)}); the .npz is corrupt: "
                        "re-export it.") from e
    member = Member(src, key, shape, dtype, fortran)
    cap = max_array_bytes()
    if member.nbytes > cap:
        raise DataError(f"'{key}' in '{src}' declares shape {shape} {dtype}: {_gb(member.nbytes)} decompressed, over "
                        f"the {_gb(cap)} limit; refused unread (raise {MAX_BYTES_ENV} if it is genuine).")
    if info.file_size != header_bytes + member.nbytes:
        raise DataError(f"'{key}' in '{src}' unpacks to {info.file_size} bytes but its header (shape {shape} "
                        f"{dtype}) implies {header_bytes + member.nbytes}; the file is corrupt or crafted: "
                        "re-export it with np.savez.")
    return member


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:150]
