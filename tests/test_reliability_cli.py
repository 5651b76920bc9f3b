"""Reliability of the ``jaxviz`` command: every expected failure is one line ``jaxviz VERB: ...``, exit 2.

Each test reproduces a finding of the adversarial run (a raw traceback, or a bad value accepted) and
checks it is now refused, naming the argument or the place, before the long work starts.
"""

from __future__ import annotations

import json
import math

import pytest

from jaxviz import cli
from jaxviz.workflows import sweep as sw
from tests.helpers import faults


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in-process; it must fail with one line naming ``needles`` (exit status 2)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse refusing an argument
        code = exit_.code
    assert code == 2, argv
    captured = capsys.readouterr()
    line = faults.one_line_error(captured.err, f"jaxviz {argv[0]}: ")
    for needle in needles:
        assert needle in line, (needle, line)
    assert len(line) < 1000
    return line


# ----- model folders -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["visualize", "--unit", "1", "--steps", "2", "--classifier", "{missing}"],
    ["visualize", "--unit", "1", "--steps", "2", "--generator", "{missing}"],
    ["sweep", "--units", "0-1", "--steps", "2", "--classifier", "{missing}", "--out", "{out}"],
    ["sweep", "--units", "0-1", "--steps", "2", "--generator", "{file}", "--out", "{out}"],
    ["demo", "--classifier", "{missing}", "--generator", "{missing}", "--out", "{out}"],
    ["inverse-set", "--neuron", "fc8:3:1:2", "--classifier", "{file}", "--out", "{out}"],
])
def test_a_missing_or_wrong_model_folder_is_one_line(tmp_path, capsys, argv):
    (tmp_path / "afile").write_text("x")
    subst = {"{missing}": str(tmp_path / "nope"), "{file}": str(tmp_path / "afile"), "{out}": str(tmp_path / "out")}
    argv = [subst.get(a, a) for a in argv]
    _fails(capsys, argv, str(tmp_path))
    assert not (tmp_path / "out").exists()


# ----- arguments by range --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needles", [
    (["visualize", "--unit", "1", "--scale", "-1"], ["--scale", "between 1 and 32"]),
    (["visualize", "--unit", "1", "--seed", str(10 ** 23)], ["--seed", "between 0 and"]),
    (["visualize", "--unit", "-3"], ["--unit"]),
    (["visualize", "--unit", "1", "--steps", "0"], ["--steps"]),
    (["demo", "--steps", "0"], ["--steps", "between 1 and"]),
    (["sweep", "--chunk-size", "-1"], ["--chunk-size", "between 1 and"]),
    (["sweep", "--chunk-size", "1e3"], ["--chunk-size", "expected an integer"]),
    (["sweep", "--max-chunks", "-1"], ["--max-chunks"]),
    (["sweep", "--max-chunks", "0"], ["--max-chunks"]),
    (["sweep", "--seeds-per-unit", "0"], ["--seeds-per-unit"]),
    (["sweep", "--steps", "9" * 5000], ["--steps", "expected an integer"]),
    (["sweep", "--method", "inverse_set", "--range", "3"], ["--range", "Z1:Z2"]),
    (["sweep", "--method", "inverse_set", "--range", "5:1"], ["--range", "Z1 <= Z2"]),
    (["sweep", "--method", "inverse_set", "--range", "nan:1"], ["--range"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--lr", "nan"], ["--lr", "finite"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--lr", "-1"], ["--lr"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--lr", "1e30"], ["--lr", "(0, 100]"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--lr", "0"], ["--lr"]),
    (["inverse-set", "--neuron", "fc8:3:1:2:foo"], ["--neuron", "position 'foo'"]),
    (["inverse-set", "--neuron", "fc8:3:1:2:1,x"], ["--neuron", "position"]),
    (["inverse-set", "--neuron", "fc8:x:1:2"], ["--neuron", "unit 'x' is not an integer"]),
    (["inverse-set", "--neuron", "fc8:3:2:1"], ["--neuron", "Z1 <= Z2"]),
    (["inverse-set", "--neuron", "fc8:3:1:inf"], ["--neuron", "finite"]),
    (["inverse-set", "--neuron", ":3:1:2"], ["--neuron", "layer name is empty"]),
    (["inverse-set", "--neuron", "fc8:3:1"], ["--neuron", "LAYER:UNIT:Z1:Z2"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--n", "0"], ["--n"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--k", "0"], ["--k"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--inner-steps", "0"], ["--inner-steps"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--max-outer", "0"], ["--max-outer"]),
    (["inverse-set", "--neuron", "fc8:3:1:2", "--max-rounds", "-5"], ["--max-rounds"]),
])
def test_arguments_are_checked_by_range(capsys, argv, needles):
    _fails(capsys, argv, *needles)


def test_a_10_mb_argument_is_not_echoed(capsys):
    line = _fails(capsys, ["inverse-set", "--neuron", "fc8:" + "9" * 10_000_000 + ":1:2"], "--neuron")
    assert len(line) < 600


def test_the_valid_edges_are_accepted():
    parser = cli.build_parser()
    args = parser.parse_args(["sweep", "--chunk-size", "1", "--max-chunks", "1", "--seed", str(2 ** 63 - 1),
                              "--steps", "1"])
    assert (args.chunk_size, args.max_chunks, args.seed, args.steps) == (1, 1, 2 ** 63 - 1, 1)
    args = parser.parse_args(["inverse-set", "--neuron", "conv5:3:-1e3:1e3:2,4", "--lr", "100"])
    c = args.neuron[0]
    assert (c.layer, c.unit, c.z1, c.z2, c.position, args.lr) == ("conv5", 3, -1000.0, 1000.0, (2, 4), 100.0)
    assert parser.parse_args(["inverse-set", "--neuron", "fc8:3:1:2:mean"]).neuron[0].position == "mean"
    assert not math.isnan(parser.parse_args(["visualize", "--unit", "0", "--scale", "32"]).scale)


# ----- outputs that cannot be written, found before the work -------------------------------------------------

def test_visualize_out_a_folder_or_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _fails(capsys, ["visualize", "--unit", "1", "--steps", "2", "--out", str(tmp_path)], "is a folder", "--out")
    _fails(capsys, ["visualize", "--unit", "1", "--steps", "2", "--out", str(tmp_path / "afile" / "x.png")],
           "which is a file", "--out")


def test_sweep_out_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _fails(capsys, ["sweep", "--units", "0-1", "--steps", "2", "--out", str(tmp_path / "afile")], "is a file")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_chunk_size_that_does_not_fit_is_refused_up_front(tmp_path, capsys):
    out = tmp_path / "s"
    _fails(capsys, ["sweep", "--units", "0-1", "--steps", "2", "--method", "pixel", "--chunk-size", "1000000",
                    "--out", str(out), "--no-progress"], "chunk size 1000000 needs about", "GiB", "at most")
    assert not out.exists()


def test_the_memory_check_uses_the_free_device_memory(tmp_path, monkeypatch):
    import jaxviz.models as jm

    monkeypatch.setattr(sw, "device_memory_bytes", lambda device: 64 << 20)  # a device with 64 MiB free
    clf, gen = jm.load("caffenet"), jm.load("generator")
    with pytest.raises(sw.SweepError, match=r"chunk size 100000 needs about .* 0\.1 GiB are free; use a chunk "
                                            r"size of at most \d+"):
        sw.sweep(clf, gen, sw.SweepConfig("fc8", (0, 1), "pixel", 2, chunk_size=100000), tmp_path / "s",
                 progress=False)
    assert not (tmp_path / "s").exists()


def test_sweep_api_refuses_bad_chunk_settings(tmp_path):
    import jaxviz.models as jm

    clf, gen = jm.load("caffenet"), jm.load("generator")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        sw.sweep(clf, gen, sw.SweepConfig("fc8", (0, 1), "pixel", 2, chunk_size=-1), tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="max_chunks must be >= 0"):
        sw.sweep(clf, gen, sw.SweepConfig("fc8", (0, 1), "pixel", 2), tmp_path / "s", progress=False, max_chunks=-1)
    assert not (tmp_path / "s").exists()


def test_inverse_set_into_another_jobs_folder_is_refused_before_sampling(tmp_path, capsys, monkeypatch):
    from jaxviz import inverse_set

    out = tmp_path / "set"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"earlier": True}))
    (out / "samples.npz").write_bytes(b"earlier")
    before = faults.files_of(out)

    def never(*a, **k):
        raise AssertionError("sampling started although the folder is refused")
    monkeypatch.setattr(inverse_set, "sample_inverse_set", never)
    _fails(capsys, ["inverse-set", "--neuron", "fc8:3:10:15", "--out", str(out)], "already holds", "--force")
    assert faults.files_of(out) == before


def test_demo_into_a_users_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "summary.json").write_text("my summary")
    (out / "notes.txt").write_text("mine")
    _fails(capsys, ["demo", "--out", str(out), "--steps", "2"], "not empty", "notes.txt")
    assert (out / "summary.json").read_text() == "my summary" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "summary.json"]


def test_demo_api_refuses_zero_steps_instead_of_running_the_default(tmp_path):
    from jaxviz.workflows import demo

    with pytest.raises(ValueError, match="steps >= 1, got 0"):
        demo.run_demo(tmp_path / "demo", steps=0)
    with pytest.raises(ValueError, match="steps >= 1, got 0"):
        demo.run_atlas(tmp_path / "demo", steps=0)
    assert not (tmp_path / "demo").exists()
