"""Label maps for imported masks: which label each mask value or colour stands for.

A label map is a JSON or YAML mapping, given inline or as a file (``--label-map``). Its keys are
either a mask value (``"7": 2``: value 7 becomes label 2) or an ``"r,g,b"`` colour (``"0,128,0":
1``), its values labels 0-255 (255 being the usual ignore label). With a map, every value or
colour a mask holds must be in it; an RGB mask needs one (a grey-looking RGB mask, r = g = b
everywhere, is read as values).

Example:
    >>> lm = parse_label_map('{"0,0,0": 0, "0,128,0": 1, "255,255,255": 255}')
    >>> lm.colours[(0, 128, 0)]
    1
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablate.errors import DataError, SpecError

_COLOUR = re.compile(r"^\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*$")
_SHOWN = 6  # unmapped values or colours named in a message


@dataclass(frozen=True)
class LabelMap:
    """Mask value -> label and ``(r, g, b)`` -> label."""

    values: dict[int, int] = field(default_factory=dict)
    colours: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values or self.colours)


def parse_label_map(arg: str | None) -> LabelMap:
    """A LabelMap from a JSON/YAML file path or an inline JSON mapping; empty for None.

    Raises:
        DataError: the file cannot be read, is not YAML/JSON within ``ablate.yamlio``'s limits (1 MiB,
            no alias bombs, no repeated keys), is not a mapping, or a key or label is not valid.
    """
    if arg is None:
        return LabelMap()
    raw, where = _read(arg)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where} must be a non-empty mapping of mask value or 'r,g,b' colour to label; "
                        f"got {type(raw).__name__}.")
    return _entries(raw, where)


def _read(arg: str) -> tuple[object, str]:
    """The parsed map and how messages name it, read by ``ablate.yamlio`` (JSON is YAML too)."""
    import yaml

    from ablate import yamlio

    path = Path(arg)
    try:
        if arg.lstrip().startswith("{"):
            try:
                return yamlio.load_text(arg, "--label-map"), "--label-map"
            except yaml.YAMLError as e:
                raise DataError(f"--label-map is not valid JSON or YAML: {yamlio.yaml_problem(e)}.") from None
        if path.is_file():
            return yamlio.load_file(path, "Label map"), f"label map '{path}'"
    except SpecError as e:  # yamlio's one line (size, encoding, aliases, duplicate keys): a data input here
        raise DataError(str(e)) from None
    raise DataError(f"--label-map '{arg}' is neither a file nor an inline JSON mapping; expected e.g. "
                    "'{\"0\": 0, \"255\": 1}' or a .json/.yaml file.")


def _entries(raw: dict, where: str) -> LabelMap:
    values: dict[int, int] = {}
    colours: dict[tuple[int, int, int], int] = {}
    for key, label in raw.items():
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 255:
            raise DataError(f"{where} maps {key!r} to {label!r}; expected a label 0-255.")
        text = str(key)
        match = _COLOUR.match(text)
        if match and all(int(v) <= 255 for v in match.groups()):
            colours[(int(match[1]), int(match[2]), int(match[3]))] = label
        elif text.strip().isdigit() and int(text) <= 65535:
            values[int(text)] = label
        else:
            raise DataError(f"{where} has key {key!r}; expected a mask value (0-65535) or an 'r,g,b' colour "
                            "(each 0-255).")
    return LabelMap(values, colours)


def apply_label_map(mask: np.ndarray, label_map: LabelMap, name: str) -> np.ndarray:
    """(H, W) values or (H, W, 3) colours -> (H, W) uint8 labels.

    Raises:
        DataError: an RGB mask without a colour map, or a value/colour the map does not cover, or
            a value over 255 without a map.
    """
    if mask.ndim == 3:
        if (mask == mask[..., :1]).all() and not label_map.colours:
            mask = mask[..., 0]  # grey stored as RGB
        else:
            return _map_colours(mask, label_map, name)
    if label_map.values:
        return _map_values(mask, label_map.values, name)
    if label_map.colours:
        raise DataError(f"mask '{name}' is single-channel but the label map has only 'r,g,b' keys; map its values "
                        f"({_listed(np.unique(mask).tolist())}) instead.")
    if mask.size and int(mask.max()) > 255:
        raise DataError(f"mask '{name}' holds values up to {int(mask.max())}; expected labels 0-255, or a "
                        "--label-map mapping its values to labels.")
    return mask.astype(np.uint8)


def _map_values(mask: np.ndarray, table: dict[int, int], name: str) -> np.ndarray:
    present = np.unique(mask).tolist()
    missing = [v for v in present if v not in table]
    if missing:
        raise DataError(f"mask '{name}' holds values {_listed(missing)} that the label map does not map; expected "
                        f"only {_listed(sorted(table))}.")
    lut = np.zeros(max(present) + 1, dtype=np.uint8)
    for v in present:
        lut[v] = table[v]
    return lut[mask]


def _map_colours(mask: np.ndarray, label_map: LabelMap, name: str) -> np.ndarray:
    rgb = mask[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    present, inverse = np.unique(packed, return_inverse=True)
    colours = [((int(p) >> 16) & 255, (int(p) >> 8) & 255, int(p) & 255) for p in present]
    missing = [c for c in colours if c not in label_map.colours]
    if missing:
        shown = "; ".join(",".join(str(v) for v in c) for c in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        hint = "the label map does not map" if label_map.colours else "no --label-map maps (give 'r,g,b' keys)"
        raise DataError(f"mask '{name}' is an RGB image with colours {shown}{more} that {hint}; expected a "
                        "label per colour.")
    labels = np.array([label_map.colours[c] for c in colours], dtype=np.uint8)
    return labels[inverse.reshape(packed.shape)]


def _listed(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return f"[{shown}{', ...' if len(values) > _SHOWN else ''}]"
