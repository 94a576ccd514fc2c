"""The CLI's error contract: one clear line and a non-zero exit, a traceback only with --debug,
no half-written output; and the data commands that make and inspect a set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import PRESET, ROOT, assert_one_error_line, run_cli

import ablate.data.io
from ablate.cli.main import main
from ablate.errors import DataError, SpecError


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's checked option types exit 2 with their one line
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def garbage_npz(tmp_path: Path) -> Path:
    """The first half of a valid archive, as a download cut short leaves it."""
    path = tmp_path / "bad.npz"
    np.savez(path, training_set=np.zeros((4, 2, 64, 128), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["spec", "nope.yaml"], r"Spec file 'nope\.yaml' not found; expected a YAML file"),
        (["run", "nope.yaml"], r"Spec file 'nope\.yaml' not found"),
        (["spec", str(PRESET), "train.epochs"], r"Override 'train\.epochs' is not of the form key=value"),
        (["run", str(PRESET), "train.epochs"], r"Override 'train\.epochs' is not of the form key=value"),
        (["spec", str(PRESET), "train.epoch=3"], r"Unknown key 'epoch' in train\."),
        (["run", str(PRESET), "model.skip.type=concatt"], r"Unknown skip 'concatt'\. .*Did you mean 'concat'\?"),
        (["spec", str(PRESET), "train.epochs=many"], r"Invalid value for 'train\.epochs'"),
        (["data", "inspect", "missing.npz"], r"Data file 'missing\.npz' not found"),
        (["data", "synth", "--out", "x.npz", "--n", "0"], r"argument --n: expected a whole number >= 1, got 0"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert_one_error_line(err, message)
    assert files_in(tmp_path) == []  # no mlruns/, no data/, no output file


def test_truncated_npz_for_inspect(capsys: pytest.CaptureFixture[str], garbage_npz: Path) -> None:
    code, _, err = cli(capsys, "data", "inspect", str(garbage_npz))
    assert code == 2
    assert_one_error_line(err, r"bad\.npz' is not a readable \.npz archive or is truncated")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is not a readable \.npz archive or is truncated"),
        (b"plain text, not an archive\n" * 8, r"is not a (readable|valid) \.npz archive"),
        ({"images": np.zeros((2, 64, 128), np.uint8)}, r"has no 'training_set' array \(found keys: \['images'\]\)"),
        ({"training_set": np.zeros((2, 64, 128), np.uint8)}, r"'training_set' has shape \(2, 64, 128\); expected"),
        ({"training_set": np.array([None, 1], dtype=object)}, r"holds an object \(pickled\) array"),
    ],
    ids=["empty", "text", "missing-key", "wrong-rank", "object-array"],
)
def test_bad_npz_for_inspect(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | dict[str, np.ndarray],
                             message: str) -> None:
    path = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    code, out, err = cli(capsys, "data", "inspect", str(path))
    assert code == 2 and out == ""
    assert_one_error_line(err, message)


def test_unexpected_errors_are_one_line_too(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("ablate.data.inspect_npz", broken)
    code, _, err = cli(capsys, "data", "inspect", str(tmp_path / "x.npz"))
    assert code == 1
    assert_one_error_line(err, r"^ablate: error: RuntimeError: disk on fire \(rerun with --debug for the traceback\)$")


def test_debug_raises_instead(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"Spec file 'nope\.yaml' not found"):
        main(["--debug", "spec", "nope.yaml"])
    with pytest.raises(DataError, match=r"not found"):
        main(["--debug", "data", "inspect", str(tmp_path / "missing.npz")])
    # --debug lets TensorFlow's start-up lines through for that command only, not for later ones
    # (or for the processes a test starts after calling main in-process).
    assert "ABLATE_DEBUG" not in os.environ


def test_the_installed_command_prints_no_traceback_unless_debug(garbage_npz: Path) -> None:
    plain = run_cli(["data", "inspect", str(garbage_npz)])
    assert plain.returncode == 2 and plain.stdout == ""
    assert_one_error_line(plain.stderr, r"is not a readable \.npz archive")
    debug = run_cli(["--debug", "data", "inspect", str(garbage_npz)])
    assert debug.returncode == 1  # Python's own exit status for an uncaught exception
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ablate.errors.DataError: " in debug.stderr


def test_synth_then_inspect(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_path = tmp_path / "sub" / "s.npz"
    code, out, _ = cli(capsys, "data", "synth", "--out", str(out_path), "--n", "40", "--n-test", "5", "--seed", "3")
    assert code == 0 and f"wrote {out_path}: 40 training pairs, 5 test images (seed 3)" in out
    with np.load(out_path) as npz:
        assert npz["training_set"].shape == (40, 2, 64, 128) and npz["test_set"].shape == (5, 64, 128)
        masks = npz["training_set"][:, 1]
    assert files_in(tmp_path) == ["sub", "sub/s.npz"]  # no temporary file left behind

    code, out, err = cli(capsys, "data", "inspect", str(out_path))
    assert code == 0 and err == ""
    assert "(40, 2, 64, 128)" in out and "(5, 64, 128)" in out
    shares = np.bincount(masks.ravel(), minlength=5) / masks.size
    for name, share in zip(("soil", "bedrock", "sand"), shares[1:4], strict=True):
        assert name in out
        assert f"{100 * share:.1f}" in out, (name, share)  # class pixel shares, as percentages


def test_synth_is_reproducible_and_seeded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert cli(capsys, "data", "synth", "--out", str(tmp_path / f"{name}.npz"), "--n", "8", "--n-test", "0",
                   "--seed", str(seed))[0] == 0
    a, b, c = (np.load(tmp_path / f"{n}.npz")["training_set"] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "synth", "--out", "{d}/out.txt", "--n", "4"], r"must end in \.npz"),
        (["data", "clean", "{bad}", "--out", "{d}/out.npz", "--report", "{d}/report.json"], r"not a readable \.npz"),
    ],
)
def test_nothing_is_written_on_failure(capsys: pytest.CaptureFixture[str], tmp_path: Path, garbage_npz: Path,
                                       args: list[str], message: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = cli(capsys, *(a.format(d=out_dir, bad=garbage_npz) for a in args))
    assert code == 2
    assert_one_error_line(err, message)
    assert files_in(out_dir) == []


def test_a_write_that_fails_midway_leaves_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(fh: object, **arrays: object) -> None:
        fh.write(b"PK\x03\x04 half an archive")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ablate.data.io.np, "savez_compressed", half_write)
    out_path = tmp_path / "s.npz"
    code, _, err = cli(capsys, "data", "synth", "--out", str(out_path), "--n", "4", "--n-test", "0")
    assert code != 0
    assert_one_error_line(err, r"No space left on device")
    assert files_in(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out_path = tmp_path / "s.npz"
    assert cli(capsys, "data", "synth", "--out", str(out_path), "--n", "4", "--n-test", "0")[0] == 0
    before = out_path.read_bytes()

    def half_write(fh: object, **arrays: object) -> None:
        fh.write(b"PK\x03\x04 half")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ablate.data.io.np, "savez_compressed", half_write)
    assert cli(capsys, "data", "synth", "--out", str(out_path), "--n", "6", "--n-test", "0")[0] != 0
    assert out_path.read_bytes() == before
    assert files_in(tmp_path) == ["s.npz"]


def test_overrides_may_follow_options(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "ablations/skip_connections.yaml")
    assert main(["ablation", "show", path, "model.depth=2", "--seeds", "3", "--no-store"]) == 0
    before = capsys.readouterr().out
    assert main(["ablation", "show", path, "--seeds", "3", "--no-store", "model.depth=2"]) == 0
    after = capsys.readouterr().out
    assert main(["ablation", "show", path, "--seeds", "3", "--no-store"]) == 0
    plain = capsys.readouterr().out
    assert before == after != plain
