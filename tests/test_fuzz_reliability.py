"""Fuzz: bad inputs and faults against the converter, checkpoints, prototxts, the CLI and run folders.

Every case ends in one of these outcomes:

- ``clear``: an expected error whose message is short and names the place (file, folder or argument);
- ``unclear``: an expected error with a message that is too long or names no place;
- ``traceback``: an exception of an unexpected type (it would reach the user as a raw traceback);
- ``accepted``: bad input taken without a word (wrong weights or card loaded, a value out of range used);
- ``lost``: data lost (results gone or wrong after a resume, an output's earlier contents changed, or
  temporary files left behind);
- ``ok``: valid input, or damage with no effect (the bytes it hit carry no data, or a file the job
  rewrites anyway);
- ``repaired``: damage named (a warning) and repaired by recomputing or rewriting from verified data;
- ``float-flip``: a bit flipped inside one float weight of a ``.caffemodel``: a different but valid
  number, undetectable since the format has no checksum (NaN/Inf results are refused and count ``clear``).

The goal is 0 ``traceback``, ``accepted`` and ``lost``. ``python -m tests.test_fuzz_reliability
[--cases N]`` prints the table over N cases per family; the tests below run a few each and assert the goal.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import pathlib
import re
import shutil
import sys
import tempfile
import warnings
import zlib
from typing import Any, Callable

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxviz.models as jm
import weights_convert
from jaxviz import cli
from jaxviz.io import atomic
from jaxviz.models import checkpoint
from jaxviz.workflows import runfolder
from jaxviz.workflows import sweep as sw
from tests.helpers import faults
from weights_convert.convert import convert
from weights_convert.errors import ConversionError

OUTCOMES = ("clear", "unclear", "traceback", "accepted", "lost", "ok", "repaired", "float-flip")
MAX_MESSAGE = 1000


class Context:
    """Inputs shared by the families, built once in a temporary folder."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.proto, self.model = faults.caffe_files(root / "caffe", "caffenet")
        self.converted = convert("caffenet", self.model, root / "converted", self.proto)
        self.ref_params = checkpoint.read_params(self.converted / checkpoint.PARAMS_DIR)
        self.ref_card = checkpoint.read_metadata(self.converted)
        self._sweep = None

    def sweep_reference(self):
        if self._sweep is None:
            clf, gen = jm.load("caffenet"), jm.load("generator")
            out = self.root / "sweep"
            config = sw.SweepConfig("fc8", (0, 1, 2, 3), "pixel", steps=2, chunk_size=2)
            sw.sweep(clf, gen, config, out, progress=False)
            self._sweep = (clf, gen, config, out, sw.load_chunks(out), faults.files_of(out / runfolder.UNITS_DIR))
        return self._sweep


def _outcome(fn: Callable[[], Any], expected: tuple[type, ...], places: list[str]) -> tuple[str | None, Any]:
    """(outcome, detail) for an expected failure or a traceback; (None, value) when ``fn`` returned."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return None, fn()
    except expected as err:
        message = str(err)
        if len(message) > MAX_MESSAGE or not any(p in message for p in places):
            return "unclear", message[:300]
        return "clear", None
    except Exception as err:  # noqa: BLE001 - what the fuzz is looking for
        return "traceback", f"{type(err).__name__}: {str(err)[:300]}"


def _differences(a: dict, b: dict) -> int:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb) or any(np.shape(x) != np.shape(y) for x, y in zip(la, lb)):
        return -1
    return sum(int(np.sum(np.asarray(x) != np.asarray(y))) for x, y in zip(la, lb))


class Tally:
    """Counts of outcomes per family, with a few examples of the bad ones."""

    def __init__(self):
        self.counts: dict[str, collections.Counter] = {}
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, family: str, outcome: str, detail: Any = None) -> None:
        self.counts.setdefault(family, collections.Counter())[outcome] += 1
        if outcome in ("traceback", "accepted", "lost", "unclear") and len(self.examples[family]) < 5:
            self.examples[family].append(f"{outcome}: {detail}")

    def table(self) -> str:
        head = f"{'family':<22}{'cases':>7}" + "".join(f"{o:>11}" for o in OUTCOMES)
        lines = [head, "-" * len(head)]
        total = collections.Counter()
        for family, c in self.counts.items():
            total.update(c)
            lines.append(f"{family:<22}{sum(c.values()):>7}" + "".join(f"{c[o]:>11}" for o in OUTCOMES))
        lines.append("-" * len(head))
        lines.append(f"{'all':<22}{sum(total.values()):>7}" + "".join(f"{total[o]:>11}" for o in OUTCOMES))
        for family, examples in self.examples.items():
            lines += [f"  {family}: {e}" for e in examples]
        return "\n".join(lines)


# ----- families ---------------------------------------------------------------------------------------------

def fuzz_caffemodel(ctx: Context, rng: np.random.Generator, n: int, tally: Tally) -> None:
    """Truncations and single-bit flips of a .caffemodel, converted with its prototxt."""
    data = ctx.model.read_bytes()
    work = pathlib.Path(tempfile.mkdtemp(dir=ctx.root))
    for i in range(n):
        damaged = bytearray(data)
        kind = "cut" if rng.random() < 0.3 else "flip"
        if kind == "cut":
            damaged = damaged[:int(rng.integers(0, len(data)))]
        else:
            bit = int(rng.integers(0, len(data) * 8))
            damaged[bit // 8] ^= 1 << (bit % 8)
        path = work / f"case{i}.caffemodel"
        path.write_bytes(bytes(damaged))
        out = work / f"out{i}"
        outcome, detail = _outcome(lambda: convert("caffenet", path, out, ctx.proto), (ConversionError,), [path.name])
        if outcome is None:
            diff = _differences(checkpoint.read_params(out / checkpoint.PARAMS_DIR), ctx.ref_params)
            outcome = "ok" if diff == 0 else "float-flip" if kind == "flip" and diff == 1 else "accepted"
            detail = f"{kind}: {diff} weights differ"
        if faults.leftovers(work):
            outcome, detail = "lost", f"temporary files left: {faults.leftovers(work)}"
        tally.add("caffemodel damage", outcome, detail)
        shutil.rmtree(out, ignore_errors=True)
        path.unlink()
    shutil.rmtree(work, ignore_errors=True)


def _damage_file(path: pathlib.Path, rng: np.random.Generator) -> str:
    kind = str(rng.choice(["flip", "flip", "flip", "cut", "garbage", "empty", "delete"]))
    size = path.stat().st_size
    if kind == "flip" and size:
        faults.flip_bit(path, int(rng.integers(0, size * 8)))
    elif kind == "cut" and size:
        faults.truncate(path, int(rng.integers(0, size)))
    elif kind == "garbage":
        path.write_bytes(rng.integers(0, 256, max(1, size), dtype=np.uint8).tobytes())
    elif kind == "empty":
        faults.truncate(path, 0)
    else:
        path.unlink()
        kind = "delete"
    return kind


def _card_body(card: dict) -> dict:
    return {k: v for k, v in card.items() if k not in (checkpoint.CARD_CHECKSUM, checkpoint.CHECKSUMS)}


def fuzz_checkpoint(ctx: Context, rng: np.random.Generator, n: int, tally: Tally) -> None:
    """Bit flips, truncation, garbage and deletion of every file of a converted model folder, then load."""
    files = sorted(str(p.relative_to(ctx.converted)) for p in ctx.converted.rglob("*") if p.is_file())
    work = pathlib.Path(tempfile.mkdtemp(dir=ctx.root))
    for i in range(n):
        folder = shutil.copytree(ctx.converted, work / f"m{i}")
        rel = str(rng.choice(files))
        kind = _damage_file(folder / rel, rng)
        outcome, model = _outcome(lambda: jm.load("caffenet", folder), (checkpoint.CheckpointError,), [str(folder)])
        detail = model
        if outcome is None:
            same = _differences(model.params, ctx.ref_params) == 0 and _card_body(dict(model.metadata)) == \
                _card_body(ctx.ref_card)
            outcome, detail = ("ok" if same else "accepted"), f"{kind} {rel}"
        tally.add("checkpoint damage", outcome, detail)
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


_VALUES = ["0", "-1", "1", "2", "3", "4", "7", "1000000000", str(2 ** 31), str(2 ** 64), "9" * 5000, "1.5", "nan",
           "inf", "-inf", '"x"', "MAX", "AVE", "true", "1e400"]


def _edit_prototxt(text: str, rng: np.random.Generator) -> str:
    kind = str(rng.choice(["value", "value", "value", "delete", "duplicate", "junk", "cut"]))
    lines = text.splitlines(True)
    if kind == "value":
        spots = [m for m in re.finditer(r"(?<=: )[^\s\"]+|(?<=: )\"[^\"]*\"", text)]
        m = spots[int(rng.integers(0, len(spots)))]
        return text[:m.start()] + str(rng.choice(_VALUES)) + text[m.end():]
    i = int(rng.integers(0, len(lines)))
    if kind == "delete":
        return "".join(lines[:i] + lines[i + 1:])
    if kind == "duplicate":
        return "".join(lines[:i + 1] + lines[i:])
    if kind == "junk":
        junk = str(rng.choice(["{", "}", ":", "layer {", "}}}", "\x00", "'", "\"unterminated", "A" * 100_000]))
        return "".join(lines[:i] + [junk + "\n"] + lines[i:])
    return text[:int(rng.integers(0, len(text)))]


def fuzz_prototxt(ctx: Context, rng: np.random.Generator, n: int, tally: Tally) -> None:
    """Edits of the deploy prototxt (values, lines, junk, truncation): the converter and load_caffe."""
    text = ctx.proto.read_text()
    work = pathlib.Path(tempfile.mkdtemp(dir=ctx.root))
    x = np.zeros((1, 35, 35, 3), np.float32)
    for i in range(n):
        proto = work / f"edit{i}.prototxt"
        proto.write_text(_edit_prototxt(text, rng))
        out = work / f"out{i}"
        outcome, detail = _outcome(lambda: convert("caffenet", ctx.model, out, proto), (ConversionError,), [proto.name])
        if outcome is None:  # a valid edit: the model must load and run, or that is a bad input accepted
            loaded, detail = _outcome(lambda: jm.load("caffenet", out)(x, taps=("prob",)), (), [])
            outcome = "ok" if loaded is None else "accepted"
        tally.add("prototxt edits", outcome, detail)
        outcome, detail = _outcome(lambda: weights_convert.load_caffe(proto, ctx.model), (ConversionError,),
                                   [proto.name])
        tally.add("prototxt load_caffe", outcome or "ok", detail)
        if faults.leftovers(work):
            tally.add("prototxt edits", "lost", faults.leftovers(work))
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


# The documented range of every numeric option: what a parsed value must satisfy.
_INT_RANGES = {
    ("visualize", "--unit"): (0, 2 ** 31 - 1), ("visualize", "--steps"): (1, cli.MAX_STEPS),
    ("visualize", "--seed"): (0, 2 ** 63 - 1), ("visualize", "--scale"): (1, 32),
    ("demo", "--steps"): (1, cli.MAX_STEPS),
    ("sweep", "--steps"): (1, cli.MAX_STEPS), ("sweep", "--seeds-per-unit"): (1, 10_000),
    ("sweep", "--seed"): (0, 2 ** 63 - 1), ("sweep", "--chunk-size"): (1, 1_000_000),
    ("sweep", "--max-chunks"): (1, 10_000_000), ("sweep", "--n"): (1, 1_000_000),
    ("inverse-set", "--n"): (1, 1_000_000), ("inverse-set", "--k"): (1, 100_000),
    ("inverse-set", "--seed"): (0, 2 ** 63 - 1), ("inverse-set", "--inner-steps"): (1, cli.MAX_STEPS),
    ("inverse-set", "--max-outer"): (1, 100_000), ("inverse-set", "--max-rounds"): (1, 10_000_000),
    ("exemplars", "--k"): (1, 10_000), ("exemplars", "--batch-size"): (1, 100_000),
    ("exemplars", "--limit"): (1, 100_000_000), ("exemplars", "--chunk-images"): (1, 100_000_000),
    ("exemplars", "--max-chunks"): (1, 10_000_000),
    ("dissect", "--n"): (1, 1000), ("dissect", "--batch-size"): (1, 100_000),
}
_REQUIRED = {"visualize": ["--unit", "0"], "inverse-set": ["--neuron", "fc8:3:1:2"], "demo": [], "sweep": [],
             "exemplars": ["--layer", "conv3", "--out", "out/x"],
             "dissect": ["--layer", "conv2", "--synthetic", "--out", "out/x"]}


def _parse(argv: list[str]) -> tuple[str | None, Any]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return None, cli.build_parser().parse_args(argv)
    except SystemExit as exit_:
        text = err.getvalue()
        lines = [l for l in text.splitlines() if l.strip()]
        clear = exit_.code == 2 and len(lines) == 1 and len(lines[0]) < MAX_MESSAGE and argv[-2] in lines[0]
        return ("clear" if clear else "unclear"), text[:300]
    except Exception as err:  # noqa: BLE001
        return "traceback", f"{type(err).__name__}: {str(err)[:300]}"


def cli_case(verb: str, option: str, text: str) -> tuple[str, Any]:
    """One value for one option: refused in one line naming it, or parsed to a value in its range."""
    if option == "--lr":
        outcome, args = _parse([verb, *_REQUIRED[verb], option, text])
        if outcome is not None:
            return outcome, args
        return ("ok" if math.isfinite(args.lr) and 0 < args.lr <= 100 else "accepted"), f"--lr {text!r} -> {args.lr}"
    outcome, args = _parse([verb, *_REQUIRED[verb], option, text])
    if outcome is not None:
        return outcome, args
    low, high = _INT_RANGES[(verb, option)]
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    ok = isinstance(value, int) and low <= value <= high
    return ("ok" if ok else "accepted"), f"{verb} {option} {text!r} -> {value!r}"


def neuron_case(text: str) -> tuple[str, Any]:
    """A --neuron spec: refused in one line, or parsed to a constraint that satisfies every rule."""
    outcome, args = _parse(["inverse-set", "--neuron", text])
    if outcome is not None:
        return outcome, args
    c = args.neuron[0]
    ok = (c.layer.strip() != "" and 0 <= c.unit < 2 ** 31 and math.isfinite(c.z1) and math.isfinite(c.z2)
          and c.z1 <= c.z2 and (c.position in ("center", "mean") or (isinstance(c.position, tuple)
                                and len(c.position) == 2 and min(c.position) >= 0)))
    return ("ok" if ok else "accepted"), f"{text!r} -> {c}"


def _random_text(rng: np.random.Generator) -> str:
    choice = int(rng.integers(0, 6))
    if choice == 0:
        return str(int(rng.integers(-10, 40)))
    if choice == 1:
        return str(int(rng.choice([-1, 1])) * 10 ** int(rng.integers(0, 40)))
    if choice == 2:
        return repr(float(rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-320, 1e30, 100.0, 100.5, 0.1])))
    if choice == 3:
        return str(rng.choice(["", " ", "1e3", "0x10", " 5", "+3", "1_000", "٣", "5 ", "-", "--", "9" * 5000]))
    if choice == 4:
        return f"{rng.normal() * 10 ** int(rng.integers(-5, 5)):g}"
    return "".join(chr(int(c)) for c in rng.integers(32, 127, int(rng.integers(1, 12))))


def _random_neuron(rng: np.random.Generator) -> str:
    layer = str(rng.choice(["fc8", "conv5", "", " ", "x" * 200]))
    unit = str(rng.choice(["3", "0", "-1", "x", "1e3", str(2 ** 40), "٣"]))
    z = [str(rng.choice(["1", "2", "-5", "nan", "inf", "-inf", "x", "1e400", "", "3.5"])) for _ in range(2)]
    parts = [layer, unit, *z]
    if rng.random() < 0.5:
        parts.append(str(rng.choice(["center", "mean", "2,3", "-1,2", "foo", "1,2,3", "", "a,b", "0,0"])))
    if rng.random() < 0.1:
        parts = parts[:int(rng.integers(0, len(parts)))]
    return ":".join(parts)


def fuzz_cli(ctx: Context | None, rng: np.random.Generator, n: int, tally: Tally) -> None:
    """Values for every numeric option of every verb, and --neuron specs (parsing only: no work starts)."""
    options = list(_INT_RANGES) + [("inverse-set", "--lr")]
    for _ in range(n):
        verb, option = options[int(rng.integers(0, len(options)))]
        tally.add("cli arguments", *cli_case(verb, option, _random_text(rng)))
        tally.add("cli --neuron", *neuron_case(_random_neuron(rng)))


def _damage_run_folder(out: pathlib.Path, rng: np.random.Generator) -> str:
    kind = str(rng.choice(["file", "file", "file", "stray", "stale", "claim", "rmdir"]))
    if kind == "stray":
        shutil.copy(runfolder.chunk_path(out, 0), runfolder.chunk_path(out, int(rng.integers(2, 9))))
        return "stray chunk"
    if kind == "stale":
        name = str(rng.choice(["chunks/.chunk_00001.npz", "units/.unit_00000_s0.png", ".results.jsonl"]))
        (out / f"{name}.tmp-999999999@{atomic.host_name()}").write_bytes(b"partial")
        return "stale temporary"
    if kind == "claim":
        runfolder.claim_path(out, int(rng.integers(0, 2))).write_text(
            json.dumps({"pid": 999999999, "host": atomic.host_name(), "start": None, "time": 0}))
        return "claim of a dead process"
    if kind == "rmdir":
        sub = str(rng.choice([runfolder.UNITS_DIR, runfolder.CHUNKS]))
        shutil.rmtree(out / sub)
        return f"deleted {sub}/"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    path = files[int(rng.integers(0, len(files)))]
    return f"{_damage_file(path, rng)} {path.relative_to(out)}"


def fuzz_run_folder(ctx: Context, rng: np.random.Generator, n: int, tally: Tally) -> None:
    """Damage to a finished sweep folder (any file, stray and stale files, claims), then the same sweep."""
    clf, gen, config, ref, ref_data, ref_units = ctx.sweep_reference()
    work = pathlib.Path(tempfile.mkdtemp(dir=ctx.root))
    for i in range(n):
        out = shutil.copytree(ref, work / f"s{i}")
        what = _damage_run_folder(out, rng)
        def resume():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                summary = sw.sweep(clf, gen, config, out, progress=False)
            named = [w for w in caught if issubclass(w.category, runfolder.DamagedFileWarning)]
            return summary.computed > 0 or bool(named)
        outcome, repaired = _outcome(resume, (runfolder.SweepError,), [str(out)])
        detail = repaired if outcome else what
        if outcome is None:
            data = sw.load_chunks(out)
            same = sorted(data) == sorted(ref_data) and all(np.array_equal(data[k], ref_data[k])
                                                               for k in ref_data if k != "seconds")
            units = faults.files_of(out / runfolder.UNITS_DIR) == ref_units
            rows = [json.loads(l)["unit"] for l in (out / runfolder.RESULTS).read_text().splitlines()]
            outcome = ("accepted" if not same else "lost" if not units or rows != [0, 1, 2, 3] or
                       faults.leftovers(out) or list((out / runfolder.CHUNKS).glob("*.claim"))
                       else "repaired" if repaired else "ok")
        tally.add("run-folder damage", outcome, f"{what}: {detail}")
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


FAMILIES = {"caffemodel": fuzz_caffemodel, "checkpoint": fuzz_checkpoint, "prototxt": fuzz_prototxt,
            "cli": fuzz_cli, "run-folder": fuzz_run_folder}


# ----- the tests: a few cases per family, the goal asserted ---------------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("fuzz"))


def _assert_goal(tally: Tally) -> None:
    print("\n" + tally.table())
    for family, c in tally.counts.items():
        assert c["traceback"] == 0 and c["accepted"] == 0 and c["lost"] == 0 and c["unclear"] == 0, tally.table()


@pytest.mark.parametrize("family, cases", [("caffemodel", 12), ("checkpoint", 16), ("prototxt", 10), ("cli", 60),
                                           ("run-folder", 8)])
def test_fuzz_family(ctx, family, cases):
    tally = Tally()
    FAMILIES[family](ctx, np.random.default_rng(zlib.crc32(family.encode())), cases, tally)
    _assert_goal(tally)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(sorted(_INT_RANGES) + [("inverse-set", "--lr")]),
       text=st.one_of(st.integers(-10 ** 25, 10 ** 25).map(str), st.text(max_size=12),
                      st.floats(allow_nan=True, allow_infinity=True).map(repr)))
def test_cli_option_values(option, text):
    outcome, detail = cli_case(*option, text)
    assert outcome in ("ok", "clear"), detail


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(st.one_of(st.sampled_from(["fc8", "3", "1", "2", "center", "mean", "2,3", "-1", "nan", "inf",
                                                 "", "1e3"]), st.text(max_size=6)), min_size=0, max_size=6))
def test_neuron_specs(parts):
    outcome, detail = neuron_case(":".join(parts))
    assert outcome in ("ok", "clear"), detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fuzz families and print the table of outcomes.")
    parser.add_argument("--cases", type=int, default=100, help="cases per family (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    tally = Tally()
    with tempfile.TemporaryDirectory() as root:
        context = Context(pathlib.Path(root))
        for i, name in enumerate(args.families):
            FAMILIES[name](context, np.random.default_rng(args.seed + i), args.cases, tally)
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(tally.table())
    bad = sum(c[o] for c in tally.counts.values() for o in ("traceback", "accepted", "lost", "unclear"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
