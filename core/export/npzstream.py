"""Reading and writing one array of an ``.npz`` in row batches, so memory stays flat.

``np.load`` reads a whole member at once (a float64 test set of 10,000 images is 650 MB); these
helpers read the ``.npy`` header and then stream rows from the zip member (compressed or not),
and write a single-array ``.npz`` the same way. Object arrays are refused: nothing is unpickled.

Example:
    >>> member = open_member("data.npz", "test_set")
    >>> for start, rows in iter_rows(member, 64):
    ...     print(start, rows.shape)
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.lib.format as npy

from core.errors import DataError


@dataclass(frozen=True)
class Member:
    """One array inside an ``.npz``: where it is, its shape and dtype."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def open_member(path: str | Path, key: str) -> Member:
    """Reads the header of ``key`` in the ``.npz`` at ``path``; raises DataError if unusable."""
    src = Path(path)
    if not src.is_file():
        raise DataError(f"Data file '{src}' not found; expected an .npz archive (e.g. with 'test_set').")
    try:
        with zipfile.ZipFile(src) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            if key not in names:
                raise DataError(f"'{src}' has no '{key}' array (found: {sorted(names)}); use --split to pick another.")
            with zf.open(f"{key}.npy") as fp:
                shape, dtype = _header(fp, src, key)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"'{src}' is not a readable .npz archive ({e}); re-export it with np.savez.") from e
    return Member(src, key, shape, dtype)


def _header(fp: IO[bytes], src: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = npy.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fp)
        else:
            raise DataError(f"'{key}' in '{src}' uses .npy format {version}; re-save it with np.savez.")
    except ValueError as e:
        raise DataError(f"'{key}' in '{src}' has a corrupt .npy header ({e}).") from e
    if dtype.hasobject:
        raise DataError(f"'{key}' in '{src}' holds object (pickled) data, which is never loaded; expected numeric "
                        "images (uint8 or float).")
    if fortran and len(shape) > 1:
        raise DataError(f"'{key}' in '{src}' is stored in Fortran order; re-save it with "
                        "np.savez(path, **{key: np.ascontiguousarray(array)}).")
    return tuple(int(d) for d in shape), dtype


def iter_rows(member: Member, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(start, rows)`` with up to ``batch`` rows at a time, in order."""
    with zipfile.ZipFile(member.path) as zf, zf.open(f"{member.key}.npy") as fp:
        _header(fp, member.path, member.key)
        n = member.shape[0] if member.shape else 0
        for start in range(0, n, batch):
            count = min(batch, n - start)
            buf = fp.read(count * member.row_bytes)
            if len(buf) != count * member.row_bytes:
                raise DataError(f"'{member.key}' in '{member.path}' is truncated at row {start}; re-export the file.")
            yield start, np.frombuffer(buf, dtype=member.dtype).reshape((count, *member.shape[1:]))


class ArrayWriter:
    """Writes one array of known shape into an open ``.npz`` (zip) in row batches; a context manager.

    Args:
        zf: a ``zipfile.ZipFile`` opened for writing.
        key: the array's name (``masks`` -> ``masks.npy``).
        shape: the full shape; the rows written must add up to ``shape[0]``.
        dtype: the array's dtype.
    """

    def __init__(self, zf: zipfile.ZipFile, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype, self.rows = shape, np.dtype(dtype), 0
        self._fp = zf.open(f"{key}.npy", "w", force_zip64=True)
        header = {"descr": npy.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        npy.write_array_header_1_0(self._fp, header)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"rows of shape {rows.shape} do not fit an array of shape {self.shape}")
        self._fp.write(rows.tobytes())
        self.rows += len(rows)

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, exc_type: object, *args: object) -> None:
        self._fp.close()  # before the zip file closes, also when the block failed
        if exc_type is None and self.rows != self.shape[0]:
            raise ValueError(f"wrote {self.rows} rows of {self.shape[0]}")
