"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

Every writer in ``ablate.data`` goes through :func:`atomic_path`: the content is written to a
hidden temporary file in the destination folder, then moved into place with ``os.replace``
(atomic on one file system). On any error the temporary file is removed and the destination
is left untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ablate.errors import DataError


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    Args:
        path: the final destination. Missing parent folders are created.

    Yields:
        The temporary file to write (it exists, empty).

    Example:
        >>> with atomic_path("out/report.json") as tmp:
        ...     tmp.write_text("{}")
    """
    dest = Path(path)
    if dest.is_dir():
        raise DataError(f"Output path '{dest}' is a folder; expected a file path.")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as err:
        raise DataError(f"Cannot write '{dest}': {err.strerror or err}. Check the folder and its permissions.") from err
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the final file the usual mode
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_npz_suffix(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path, raising DataError unless it ends in ``.npz``."""
    out = Path(path)
    if out.suffix.lower() != ".npz":
        raise DataError(f"Output file '{out}' must end in .npz (numpy archive); got suffix '{out.suffix}'.")
    return out


def refuse_same_file(out: str | os.PathLike[str], src: str | os.PathLike[str]) -> None:
    """Raise DataError if ``out`` names the same file as the input ``src``."""
    out_p, src_p = Path(out), Path(src)
    same = out_p.resolve() == src_p.resolve()
    if not same and out_p.exists() and src_p.exists():
        same = os.path.samefile(out_p, src_p)
    if same:
        raise DataError(f"Refusing to overwrite the input file '{src_p}'; choose another output path.")


def save_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` at ``path`` atomically.

    Args:
        path: destination, must end in ``.npz``.
        arrays: name -> array; object arrays are refused (they would need pickle to load).

    Returns:
        The destination path.
    """
    out = check_npz_suffix(path)
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise DataError(f"Array '{name}' has dtype object; expected a numeric or string array.")
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return out


def save_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON at ``path`` atomically and return the path."""
    out = Path(path)
    text = json.dumps(obj, indent=2) + "\n"
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
