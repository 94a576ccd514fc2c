"""Writes or checks ``core/registry_manifest.json``, the registries' schemas as JSON.

The manifest lets commands that only read specs (``ablate spec``, ``ablation plan``, ``--help``)
check names, keys and value types without importing TensorFlow (see ``ablate.registry``). It is
derived from the code: regenerate it after adding or changing a block::

    python -m ablate.manifest          # rewrite it (``make manifest``)
    python -m ablate.manifest --check  # exit 1 if it is out of date (the tests do this too)
"""

from __future__ import annotations

import argparse
import json
import sys

from ablate.registry import ALL_REGISTRIES, MANIFEST, load_all


def current() -> str:
    """The manifest the code implies, as the exact text the file should hold."""
    load_all()
    data = {key: registry.snapshot() for key, registry in ALL_REGISTRIES.items()}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.manifest", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = current()
    if args.check:
        stale = not MANIFEST.exists() or MANIFEST.read_text() != text
        if stale:
            print(f"{MANIFEST} is out of date: run `python -m ablate.manifest`", file=sys.stderr)
        return int(stale)
    MANIFEST.write_text(text)
    print(f"wrote {MANIFEST} ({sum(len(r) for r in json.loads(text).values())} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
