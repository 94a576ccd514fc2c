"""Reading and writing one array of an ``.npz`` in row batches, so memory stays flat.

``np.load`` reads a whole member at once (a float64 test set of 10,000 images is 650 MB); these
helpers stream rows from the zip member (compressed or not) after :func:`open_member` has checked
its header (see :mod:`ablate.data.npz`: no object arrays, a size cap, a zip entry that matches its
header), and write a single-array ``.npz`` the same way.

Example:
    >>> member = open_member("data.npz", "test_set")
    >>> for start, rows in iter_rows(member, 64):
    ...     print(start, rows.shape)
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
import numpy.lib.format as npy

from ablate.data.npz import Member, open_member, read_header
from ablate.errors import DataError

__all__ = ["ArrayWriter", "Member", "iter_rows", "open_member"]


def iter_rows(member: Member, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(start, rows)`` with up to ``batch`` rows at a time, in order."""
    if member.fortran and len(member.shape) > 1:  # its rows are not contiguous in the file
        raise DataError(f"'{member.key}' in '{member.path}' is stored in Fortran order; re-save it with "
                        f"np.savez(path, {member.key}=np.ascontiguousarray(array)).")
    n, start = (member.shape[0] if member.shape else 0), 0
    try:
        with zipfile.ZipFile(member.path) as zf, zf.open(f"{member.key}.npy") as fp:
            read_header(fp, member.path, member.key)
            for start in range(0, n, batch):
                count = min(batch, n - start)
                buf = fp.read(count * member.row_bytes)
                if len(buf) != count * member.row_bytes:
                    raise DataError(f"'{member.key}' in '{member.path}' is truncated at row {start}; re-export "
                                    "the file.")
                yield start, np.frombuffer(buf, dtype=member.dtype).reshape((count, *member.shape[1:]))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a bad CRC or deflate stream mid-file
        raise DataError(f"'{member.key}' in '{member.path}' is corrupt near row {start} "
                        f"({str(e).splitlines()[0][:150] if str(e) else type(e).__name__}); re-export the file.") from e


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
