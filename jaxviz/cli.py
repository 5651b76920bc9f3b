"""The ``jaxviz`` command: ``demo``, ``visualize`` (one unit), ``sweep`` (a layer), ``inverse-set``,
``exemplars`` (top real images per unit), ``dissect`` (network dissection), ``project`` and ``dream``
(lenses on a given image).

One argument tree: every verb is a subcommand of one parser, and every verb turns an expected failure
(bad argument, unknown layer, missing or damaged model folder, foreign or unwritable output, a chunk size
that does not fit in memory) into one line ``jaxviz VERB: problem (place)`` and exit code 2, before the
long work starts wherever the problem is knowable then. Arguments are checked by range where they are
parsed (``type=`` validators name the argument); messages quoting user text are cut short.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import time
import warnings
from typing import Callable, Sequence

import jax
import numpy as np

from jaxviz import inverse_set, lenses
from jaxviz.core import objectives
from jaxviz import lenses
from jaxviz.io import images
from jaxviz.models import load
from jaxviz.models.checkpoint import CheckpointError
from jaxviz.models import preprocessing as pp
from jaxviz.recipes import registry
from jaxviz.workflows.compile_cache import enable_compilation_cache
from jaxviz.workflows import demo as demo_job
from jaxviz.workflows import dissection as dissection_job
from jaxviz.workflows import exemplars as exemplars_job
from jaxviz.workflows import inverse_sets, sweep as sweeps
from jaxviz.workflows.progress import Stage, Stages
from jaxviz.workflows.devices import is_out_of_memory
from jaxviz.workflows.runfolder import SweepError, shorten

EXPECTED = (ValueError, IndexError, KeyError, SweepError, CheckpointError, OSError, MemoryError)
EXIT_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are the command's one line: ``jaxviz VERB: problem (argument --X)``, exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        m = re.match(r"argument (\S+): (.*)", message, re.S)
        text = f"{m[2]} (argument {m[1]})" if m else message
        self.exit(EXIT_ERROR, f"{self.prog}: {shorten(text, 400)}\n")


# ----- argument validators (argparse type=): each names the range it wants --------------------------------

def int_arg(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(repr(text), 40)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {shorten(value, 40)}")
        return value
    return parse


def float_arg(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shorten(repr(text), 40)}") from None
        if not math.isfinite(value) or not (low < value if low_open else low <= value) or value > high:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {bracket}{low:g}, {high:g}], got {value:g}")
        return value
    return parse


MAX_STEPS = 1_000_000
SEED = int_arg(0, 2 ** 63 - 1)          # jax.random.key takes a signed 64-bit seed
STEPS = int_arg(1, MAX_STEPS)
SCALE = int_arg(1, 32)                   # a 227 px image 32x is 7264 px on a side
LEARNING_RATE = float_arg(0.0, 100.0, low_open=True)  # Adam moves a code coordinate by about lr per step


def range_arg(text: str) -> tuple[float, float]:
    """``Z1:Z2`` -> (z1, z2), finite, z1 <= z2."""
    parts = text.split(":")
    try:
        z1, z2 = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z1:Z2 (two numbers), got {shorten(repr(text), 60)}") from None
    if not (math.isfinite(z1) and math.isfinite(z2)) or z1 > z2:
        raise argparse.ArgumentTypeError(f"expected finite Z1 <= Z2, got {shorten(text, 60)}")
    return z1, z2


def neuron_arg(text: str) -> "inverse_set.Constraint":
    try:
        return parse_neuron(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_output_file(path: str | os.PathLike, argument: str = "--out") -> pathlib.Path:
    """A file to write later: not a folder, not under a file, in a folder that is (or can be made) writable."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the path of a file to write (argument {argument})")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{path} lies under {parent}, which is a file, not a folder (argument {argument})")
    existing = next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"the folder {existing} is not writable (argument {argument})")
    return path


def check_output_folder(path: str | os.PathLike, argument: str = "--out") -> pathlib.Path:
    """A folder to write: not a file, nor under one; writable where it exists."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder (argument {argument})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{path} lies under {parent}, which is a file, not a folder (argument {argument})")
            break
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{existing} is not writable (argument {argument})")
    return path


def describe_error(err: BaseException) -> str:
    """The one-line text of an expected failure."""
    if isinstance(err, OSError) and not isinstance(err, (SweepError,)) and err.strerror:
        return f"{err.strerror}" + (f" ({err.filename})" if err.filename else "")
    if isinstance(err, MemoryError):
        return "out of memory" + (f": {err}" if str(err) else "")
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err) or type(err).__name__


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one parser, one subcommand per verb."""
    parser = OneLineParser(prog="jaxviz", description="Synthesize the preferred inputs of neurons.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    _add_demo(verbs)
    _add_visualize(verbs)
    _add_lenses(verbs)
    _add_sweep(verbs)
    _add_inverse_set(verbs)
    _add_exemplars(verbs)
    _add_dissect(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and run a verb; expected failures print one line and return 2 (as does a bad argument)."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as done:  # argparse has printed its one-line error (or --help): hand back the code
        return int(done.code or 0)
    prog = f"jaxviz {args.verb}"

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {shorten(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        enable_compilation_cache()  # a rerun of any command reads the programs compiled before
        try:
            return args.run(args)
        except EXPECTED as err:
            print(f"{prog}: {shorten(describe_error(err))}", file=sys.stderr)
            return EXIT_ERROR
        except Exception as err:  # a device out of memory surfaces as the runtime's own error type
            if not is_out_of_memory(err):
                raise
            print(f"{prog}: out of memory on the device ({shorten(err, 200)}); use a smaller --chunk-size or "
                  f"fewer --steps/--n", file=sys.stderr)
            return EXIT_ERROR


def _model_options(p: argparse.ArgumentParser, env: bool = False) -> None:
    hint = lambda name: f" (default: ${name}, else the embedded model)" if env else " (default: embedded)"
    p.add_argument("--classifier", default=os.environ.get("JAXVIZ_CLASSIFIER") if env else None,
                   help="converted CaffeNet folder" + hint("JAXVIZ_CLASSIFIER"))
    p.add_argument("--generator", default=os.environ.get("JAXVIZ_GENERATOR") if env else None,
                   help="converted generator folder" + hint("JAXVIZ_GENERATOR"))


def _verb(verbs, name: str, run: Callable[[argparse.Namespace], int], **kwargs) -> argparse.ArgumentParser:
    p = verbs.add_parser(name, **kwargs)
    p.set_defaults(run=run)
    return p


# ----- demo -----------------------------------------------------------------------------------------------

def _add_demo(verbs) -> None:
    p = _verb(verbs, "demo", _run_demo, help="run the main job on the embedded default models: the fc8 atlas, "
              "G(E(x)) and an inverse set in one static gallery")
    p.add_argument("--out", default="out/demo", help="folder for the results (default: out/demo)")
    _model_options(p, env=True)
    p.add_argument("--steps", type=STEPS, default=None, help=f"steps per run (default {demo_job.EMBEDDED_STEPS} "
                   f"embedded, {demo_job.REAL_STEPS} real)")


def _run_demo(args) -> int:
    check_output_folder(args.out)
    demo_job.run_demo(args.out, args.classifier, args.generator, args.steps)
    return 0


# ----- visualize ------------------------------------------------------------------------------------------

# Every registered method but the sampler, which is one of the sweep's class-layer methods.
VISUALIZE_METHODS = tuple(m for m in registry.METHODS if m != "sampler")


def _add_visualize(verbs) -> None:
    p = _verb(verbs, "visualize", _run_visualize,
              help="one unit's preferred input, written as a PNG; embedded pair by default")
    p.add_argument("--layer", default="fc8", help="layer (Caffe blob name, e.g. fc8, fc6, conv5; default fc8)")
    p.add_argument("--unit", type=int_arg(0, 2 ** 31 - 1), required=True,
                   help="unit (or channel) index in the layer")
    p.add_argument("--method", choices=VISUALIZE_METHODS, default="dgn_am",
                   help="; ".join(f"{m}: {registry.METHODS[m].summary}" for m in VISUALIZE_METHODS)
                   + " (default dgn_am)")
    _objective_option(p)
    p.add_argument("--steps", type=STEPS, default=None, help="steps (default: the method's original count)")
    p.add_argument("--seed", type=SEED, default=0)
    _model_options(p)
    p.add_argument("--scale", type=SCALE, default=None, help="PNG magnification (default: to at least 224 px)")
    p.add_argument("--image", choices=("best", "final"), default="best",
                   help="which image to write: the best one seen (what the scores describe) or the last")
    p.add_argument("--out", default=None, help="PNG path (default: out/<layer>_<unit>_<method>.png)")


def _objective_option(p) -> None:
    p.add_argument("--objective", choices=tuple(registry.OBJECTIVE_NAMES), default="auto",
                   help="auto: the method's default (pre; for dgn_am on a rectified hidden layer, tempered); "
                        "raw: exactly the layer named; pre: the unit's activation through its pre-activation "
                        "for a rectified hidden layer (fc6 -> fc6:pre); log_softmax: selectivity across the "
                        f"layer, which puts the unit on top more often; tempered: that selectivity at "
                        f"T={registry.TEMPERATURE:g} (default auto)")


def _settings_line(method: str, clf, layer: str) -> str | None:
    """One line saying where ``method`` departs from its paper on ``layer`` (None where it does not)."""
    settings = registry.method_settings(method, clf, layer)
    if not settings:
        return None
    shown = ", ".join(f"{k} {v:g}" for k, v in settings.items())
    return f"{method} on {layer}: {shown} (the paper's settings on class layers; recipes.registry.method_settings)"


def _run_visualize(args) -> int:
    check_output_file(args.out or f"out/{args.layer}_{args.unit}_{args.method}.png")
    clf = load("caffenet", args.classifier)
    gen = load("generator", args.generator) if registry.METHODS[args.method].needs_generator else None
    preset, objective = registry.build(args.method, clf, gen, args.layer, args.steps,
                                       kind=registry.OBJECTIVE_NAMES[args.objective])
    sweeps.layer_width(clf, args.layer)  # an unknown layer is named before any work
    if line := _settings_line(args.method, clf, args.layer):
        print(line)
    with Stage(f"visualize {args.layer} unit {args.unit} ({args.method})", preset.method.steps) as stage:
        result = preset.visualize(clf, objective, jax.random.key(args.seed), target=np.int32(args.unit),
                                  on_step=stage.update)
    out = args.out or f"out/{args.layer}_{args.unit}_{args.method}.png"
    result.save_png(out, which=args.image, scale=args.scale)
    report = result.report
    print(report.line() if report is not None else f"{args.layer} unit {args.unit}: done")
    flags = len(report.flags) if report is not None else 0
    print(f"wrote {out} ({args.image} image); {flags} flag(s)")
    return 0


# ----- inverse-set ----------------------------------------------------------------------------------------

def _add_inverse_set(verbs) -> None:
    p = _verb(verbs, "inverse-set", _run_inverse_set, help="sample inputs whose activation lies in [z1, z2] "
              "(Hada & Carreira-Perpinan 2019); embedded pair by default")
    p.add_argument("--neuron", action="append", required=True, type=neuron_arg, metavar="LAYER:UNIT:Z1:Z2[:ROW,COL|center|mean]",
                   help="a constrained neuron; repeat for an intersection (e.g. fc8:3:10:15)")
    p.add_argument("--n", type=int_arg(1, 1_000_000), default=500, help="samples (default 500)")
    p.add_argument("--k", type=int_arg(1, 100_000), default=10, help="codes per round (default 10)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--lr", type=LEARNING_RATE, default=0.1, help="Adam step in code units, in (0, 100] (default 0.1)")
    p.add_argument("--diversity", choices=("encoder", "code", "none"), default="encoder")
    p.add_argument("--joint", action="store_true", help="optimize all n together (eq. 15; small n)")
    p.add_argument("--inner-steps", type=STEPS, default=100, help="gradient steps per outer iteration (default 100)")
    p.add_argument("--max-outer", type=int_arg(1, 100_000), default=8)
    p.add_argument("--max-rounds", type=int_arg(1, 10_000_000), default=1000)
    _model_options(p)
    p.add_argument("--out", default="out/inverse_set", help="folder for the results (default: out/inverse_set); "
                   "an existing one is replaced only when it holds the same job's results, or with --force")
    p.add_argument("--force", action="store_true", help="replace whatever --out holds (once the new results are "
                   "complete)")


def parse_neuron(text: str) -> inverse_set.Constraint:
    """``LAYER:UNIT:Z1:Z2[:POSITION]`` -> a Constraint (POSITION: center, mean or ROW,COL).

    Every part is checked: a layer name, a unit >= 0, finite Z1 <= Z2, a known position; ``ValueError``
    naming the part otherwise.
    """
    shown = shorten(repr(text), 80)
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"--neuron {shown}: expected LAYER:UNIT:Z1:Z2[:POSITION]")
    layer = parts[0].strip()
    if not layer:
        raise ValueError(f"--neuron {shown}: the layer name is empty")
    try:
        unit = int(parts[1], 10)
    except ValueError:
        raise ValueError(f"--neuron {shown}: unit {shorten(repr(parts[1]), 40)} is not an integer") from None
    if not 0 <= unit < 2 ** 31:
        raise ValueError(f"--neuron {shown}: unit must be >= 0")
    try:
        z1, z2 = float(parts[2]), float(parts[3])
    except ValueError:
        raise ValueError(f"--neuron {shown}: Z1 and Z2 must be numbers") from None
    if not (math.isfinite(z1) and math.isfinite(z2)) or z1 > z2:
        raise ValueError(f"--neuron {shown}: expected finite Z1 <= Z2, got [{z1:g}, {z2:g}]")
    position: str | tuple[int, int] = "center" if len(parts) == 4 else parts[4].strip()
    if isinstance(position, str) and position not in ("center", "mean"):
        try:
            row, col = (int(v, 10) for v in position.split(","))
        except ValueError:
            raise ValueError(f"--neuron {shown}: position {shorten(repr(position), 40)} is not center, mean or "
                             f"ROW,COL") from None
        if row < 0 or col < 0:
            raise ValueError(f"--neuron {shown}: position ROW,COL must be >= 0")
        position = (row, col)
    return inverse_set.Constraint(layer, unit, z1, z2, position)


def _run_inverse_set(args) -> int:
    start = time.perf_counter()
    constraints = list(args.neuron)  # parsed and checked by neuron_arg
    config = inverse_set.InverseSetConfig(
        k=args.k, n=args.n, lr=args.lr, diversity=args.diversity, joint=args.joint,
        inner_steps=args.inner_steps, max_outer=args.max_outer, max_rounds=args.max_rounds)
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    job = inverse_sets.results_job(clf, gen, constraints, config, args.seed)
    inverse_sets.check_results_folder(args.out, job, args.force)  # refused before the sampling, not after
    with Stages("inverse-set: ", unit="") as progress:
        result = inverse_set.sample_inverse_set(clf, gen, constraints, jax.random.key(args.seed), config,
                                                progress=progress)
    seconds = time.perf_counter() - start
    out = inverse_sets.save_results(result, args.out, clf.preprocessing,
                                    {"seconds": round(seconds, 1), "seed": args.seed}, job=job, force=args.force)
    print(f"{result.message} ({seconds:.0f} s); results written to {out}/")
    return 0 if result.status == "ok" else 1


# ----- sweep ----------------------------------------------------------------------------------------------

def _add_sweep(verbs) -> None:
    p = _verb(verbs, "sweep", _run_sweep, help="visualize many units of a layer in one vectorized, sharded, "
              "resumable run and write a browsable gallery; embedded pair by default")
    p.add_argument("--layer", default="fc8", help="layer whose units to sweep (default fc8)")
    p.add_argument("--units", default="all", help="'all', or ids and ranges such as '0-99,250' (default all)")
    p.add_argument("--method", default="dgn_am", choices=(*sweeps.METHODS, "inverse_set"),
                   help="; ".join(f"{m}: {registry.METHODS[m].summary}" for m in sweeps.METHODS)
                   + "; inverse_set: samples with activation in --range, per unit")
    p.add_argument("--range", type=range_arg, default=None, metavar="Z1:Z2",
                   help="activation range, for --method inverse_set")
    p.add_argument("--n", type=int_arg(1, 1_000_000), default=50,
                   help="samples per unit, for --method inverse_set (default 50)")
    p.add_argument("--steps", type=STEPS, default=None,
                   help="steps per run (default: the method's own: " + ", ".join(
                       f"{m} {registry.METHODS[m].steps}" for m in sweeps.METHODS) + ")")
    _objective_option(p)
    p.add_argument("--seeds-per-unit", type=int_arg(1, 10_000), default=1)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--chunk-size", type=int_arg(1, 1_000_000), default=None,
                   help="runs per compiled chunk (default: from memory); one that does not fit in the free "
                        "device memory is refused")
    p.add_argument("--max-chunks", type=int_arg(1, 10_000_000), default=None,
                   help="stop after this many chunks (rerun resumes)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal outside CI)")
    _model_options(p)
    p.add_argument("--out", default="out/sweep", help="folder for the results (default: out/sweep)")


def _run_sweep(args) -> int:
    check_output_folder(args.out)
    if args.method == "inverse_set":
        if args.objective != "auto":
            raise ValueError("--objective chooses what the optimizing methods maximize; an inverse set samples "
                             "a range of the unit's own activation (drop --objective)")
        return _run_inverse_set_sweep(args)
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    units = sweeps.parse_units(args.units, sweeps.layer_width(clf, args.layer))
    config = sweeps.SweepConfig(args.layer, units, args.method, args.steps, args.seeds_per_unit, args.seed,
                                args.chunk_size, objective=args.objective)
    if line := _settings_line(args.method, clf, args.layer):
        print(line)
    s = sweeps.sweep(clf, gen, config, args.out, progress=args.progress, max_chunks=args.max_chunks)
    done = (s.out_dir / "index.html").exists()
    rate = f"{s.units_per_second:.2f} runs/s" if s.computed else "nothing left to compute (resumed)"
    print(f"{s.computed} of {s.runs} runs computed now, chunk size {s.chunk_size} on {s.devices} device(s), {rate}")
    if not done:
        busy = getattr(s, "busy", ())
        if busy:
            print(f"{len(busy)} chunk(s) are being computed by other processes ({shorten('; '.join(busy), 300)}); "
                  f"the last one to finish writes the gallery (or run the same command again then)")
        else:
            print("not finished; run the same command to resume")
        return 0
    rows = [json.loads(line) for line in (s.out_dir / "results.jsonl").read_text().splitlines()]
    counts = sweeps.flag_counts(rows)
    print(f"flags: {', '.join(f'{k} {v}' for k, v in counts.items()) if counts else 'none'} "
          f"({sum(1 for r in rows if r.get('flags'))} of {len(rows)} runs flagged; reasons and fixes in "
          f"results.jsonl)")
    print(f"gallery: {s.out_dir / 'index.html'}")
    return 0


def _run_inverse_set_sweep(args) -> int:
    if args.range is None:
        raise ValueError("--method inverse_set needs --range Z1:Z2 (argument --range)")
    z1, z2 = args.range
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    units = sweeps.parse_units(args.units, sweeps.layer_width(clf, args.layer))
    config = inverse_sets.InverseSetSweepConfig(args.layer, units, z1, z2, n=args.n, seed=args.seed)
    rows = inverse_sets.sweep_inverse_sets(clf, gen, config, args.out, progress=args.progress,
                                           max_units=args.max_chunks)
    reached = sum(r["samples"] > 0 for r in rows)
    print(f"{len(rows)} of {len(units)} units done, {reached} reached [{z1:g}, {z2:g}]; "
          + (f"gallery: {args.out}/index.html" if len(rows) == len(units) else "run the same command to resume"))
    return 0


# ----- exemplars and dissect (lenses: real data through the network) ----------------------------------

def _add_exemplars(verbs) -> None:
    p = _verb(verbs, "exemplars", _run_exemplars, help="every unit's top-k real images of a set (a folder, or the "
              "shipped digits) with receptive-field crops; resumable; embedded classifier by default")
    p.add_argument("--layer", required=True, help="layer (e.g. conv3, fc7)")
    p.add_argument("--units", default="all", help="'all', or ids and ranges such as '0-9,42' (default all)")
    p.add_argument("--k", type=int_arg(1, 10_000), default=9, help="exemplars per unit (default 9)")
    p.add_argument("--images", default=None, help="folder of images (png/jpg, searched recursively; default: the "
                   "1000 held-out digits shipped with jaxviz)")
    p.add_argument("--limit", type=int_arg(1, 100_000_000), default=None, help="use only the first N images")
    p.add_argument("--batch-size", type=int_arg(1, 100_000), default=50, help="images per forward pass (default 50)")
    p.add_argument("--chunk-images", type=int_arg(1, 100_000_000), default=None,
                   help="images per committed chunk (default 4 batches)")
    p.add_argument("--max-chunks", type=int_arg(1, 10_000_000), default=None,
                   help="stop after this many chunks (rerun resumes)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal outside CI)")
    p.add_argument("--classifier", default=None, help="converted CaffeNet folder (default: embedded)")
    p.add_argument("--out", required=True, help="folder for the results (resumed when it holds the same job)")


def _layer_job(args) -> tuple:
    """The output folder checked, the classifier loaded and the units of ``--layer`` parsed, before any work."""
    check_output_folder(args.out)
    clf = load("caffenet", args.classifier)
    return clf, sweeps.parse_units(args.units, sweeps.layer_width(clf, args.layer))


def _run_exemplars(args) -> int:
    clf, units = _layer_job(args)
    source = exemplars_job.source_for(clf, args.images, args.limit)
    run = exemplars_job.run_exemplars(clf, source, args.layer, args.out, args.k, units, args.batch_size,
                                      args.chunk_images, args.max_chunks, args.progress)
    print(f"{run.computed} of {run.chunks} chunks computed now ({len(source)} images, {len(units)} units)")
    if not run.finished:
        print("not finished; run the same command to resume")
        return 0
    print(f"exemplars: {run.out_dir / exemplars_job.EXEMPLARS_FILE}; page: {run.out_dir / exemplars_job.INDEX}")
    return 0


def _add_dissect(verbs) -> None:
    p = _verb(verbs, "dissect", _run_dissect, help="network dissection: which units of a conv layer detect a "
              "labelled concept (IoU of their top-quantile maps with concept masks); embedded classifier by default")
    p.add_argument("--layer", required=True, help="conv layer (e.g. conv3)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--masks", default=None, help="mask folder (concepts.json, images/NAME.png, "
                        "masks/NAME/CONCEPT.png; see the README)")
    source.add_argument("--synthetic", action="store_true", help="the synthetic digit set (stroke, background, "
                        "top_half, dot), generated on the fly")
    p.add_argument("--n", type=int_arg(1, 1000), default=200, help="images of the synthetic set (default 200)")
    p.add_argument("--units", default="all", help="'all', or ids and ranges such as '0-9,42' (default all)")
    p.add_argument("--quantile", type=float_arg(0.0, 0.5, low_open=True), default=0.005,
                   help="P(a > T) of each unit's threshold, in (0, 0.5] (default 0.005)")
    p.add_argument("--iou-threshold", type=float_arg(0.0, 1.0), default=0.04,
                   help="a unit is a detector when its best IoU exceeds this (default 0.04)")
    p.add_argument("--batch-size", type=int_arg(1, 100_000), default=50, help="images per forward pass (default 50)")
    p.add_argument("--net2vec", action="store_true", help="also fit Net2Vec's learned combination of units per "
                   "concept (net2vec.csv: its IoU against the best single unit's)")
    p.add_argument("--classifier", default=None, help="converted CaffeNet folder (default: embedded)")
    p.add_argument("--out", required=True, help="folder for the results")


def _run_dissect(args) -> int:
    clf, units = _layer_job(args)
    masks = (lenses.synthetic_mask_set(args.n) if args.synthetic
             else dissection_job.read_mask_folder(args.masks, clf))
    result = dissection_job.run_dissection(clf, masks, args.layer, args.out, args.quantile, args.iou_threshold,
                                           None if args.units.strip().lower() == "all" else units, args.batch_size,
                                           args.net2vec)
    detectors = [r for r in result.rows() if r["detector"]]
    found = ", ".join(f"{c} {sum(r['concept'] == c for r in detectors)}" for c in result.concepts)
    print(f"{len(detectors)} of {len(result.units)} units of {args.layer} are detectors (IoU > "
          f"{args.iou_threshold:g}): {found}")
    print(f"table: {pathlib.Path(args.out) / 'dissection.csv'}; page: {pathlib.Path(args.out) / 'index.html'}")
    return 0


# ----- lenses: project, dream -------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_output(path: str | os.PathLike, argument: str = "--out") -> pathlib.Path:
    """``check_output_file``, and refuse to replace an existing file that is not a PNG (a user's data)."""
    path = check_output_file(path, argument)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise ValueError(f"{path} exists and is not a PNG; refusing to overwrite it (argument {argument})")
    return path


def _png_scale(scale: int | None, height: int) -> int:
    return scale if scale is not None else max(1, -(-224 // height))


def _lens_unit(model, layer: str, unit: int | None) -> None:
    """An unknown layer or a unit outside it, named before any work."""
    width = lenses.layer_shape(model, layer)[-1]
    if unit is not None and not unit < width:
        raise ValueError(f"unit {unit} is out of range for layer {layer!r} ({width} units: 0..{width - 1}) "
                         f"(argument --unit)")


def _lens_image(args, model, layer: str, unit: int | None, strongest: bool) -> tuple[np.ndarray, str]:
    """The network-space image a lens looks at, and where it came from: --image, --digit, or the digit
    that activates the unit most."""
    if args.image is not None and args.digit is not None:
        raise ValueError("give --image or --digit, not both (argument --digit)")
    if args.image is not None:
        try:
            x, resized, size = lenses.read_image(args.image, model)
        except ValueError as err:
            raise ValueError(f"{err} (argument --image)") from None
        if resized:
            h, w = model.input_shape[:2]
            print(f"jaxviz {args.verb}: {args.image} is {size[0]}x{size[1]}; resized to the model's {w}x{h}",
                  file=sys.stderr)
        return x, str(args.image)
    if args.digit is not None or not strongest:
        index = 0 if args.digit is None else args.digit
        return lenses.shipped_digit(model, index), f"shipped digit {index}"
    index, x = lenses.strongest_digit(model, layer, unit)
    return x, f"shipped digit {index} (the one activating {layer} unit {unit} most)"


def _lens_common(p: argparse.ArgumentParser, default_layer: str) -> None:
    p.add_argument("--layer", default=default_layer, help=f"layer (tap name, e.g. conv3, fc8; default {default_layer})")
    p.add_argument("--image", default=None, help="image file (any size: resized to the model's input)")
    p.add_argument("--digit", type=int_arg(0, 2 ** 31 - 1), default=None,
                   help="index of a shipped reference digit to use instead of --image")
    p.add_argument("--classifier", default=None, help="converted CaffeNet folder (default: embedded)")
    p.add_argument("--scale", type=SCALE, default=None, help="PNG magnification (default: to at least 224 px)")


def _add_lenses(verbs) -> None:
    p = _verb(verbs, "project", _run_project, help="project one unit down to the pixels of an image (DeconvNet, "
              "saliency or guided backprop) and write image | projection as a PNG")
    _lens_common(p, "conv3")
    p.add_argument("--unit", type=int_arg(0, 2 ** 31 - 1), required=True, help="unit (channel) index in the layer")
    p.add_argument("--rule", choices=lenses.RULES, default="deconvnet",
                   help="how a ReLU passes the signal back: deconvnet (Zeiler & Fergus 2014), gradient "
                        "(saliency, Simonyan et al. 2014), guided (Springenberg et al. 2015); default deconvnet")
    p.add_argument("--keep", choices=lenses.KEEPS, default="map",
                   help="what is sent back: the unit's whole map, or only its strongest activation (default map)")
    p.add_argument("--out", default=None, help="PNG path (default: out/project_<layer>_<unit>_<rule>.png)")

    p = _verb(verbs, "dream", _run_dream, help="DeepDream: amplify what a layer (or a unit) sees in an image, "
              "written as a PNG")
    _lens_common(p, "conv2")
    p.add_argument("--unit", type=int_arg(0, 2 ** 31 - 1), default=None,
                   help="amplify only this channel (default: the whole layer)")
    p.add_argument("--octaves", type=int_arg(1, 12), default=3, help="scales processed, 1..12 (default 3)")
    p.add_argument("--octave-scale", type=float_arg(1.0, 4.0, low_open=True), default=1.4,
                   help="size ratio between octaves, in (1, 4] (default 1.4)")
    p.add_argument("--steps", type=int_arg(1, 10_000), default=10, help="steps per octave (default 10)")
    p.add_argument("--lr", type=LEARNING_RATE, default=1.5, help="step in units of the mean |gradient|, in (0, 100] "
                   "(default 1.5)")
    p.add_argument("--jitter", type=int_arg(0, 1024), default=2, help="largest random roll in pixels (default 2)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", default=None, help="PNG path (default: out/dream_<layer>.png)")


def _run_project(args) -> int:
    out = check_png_output(args.out or f"out/project_{args.layer}_{args.unit}_{args.rule}.png")
    model = load("caffenet", args.classifier)
    _lens_unit(model, args.layer, args.unit)
    x, source = _lens_image(args, model, args.layer, args.unit, strongest=True)
    projection = np.asarray(lenses.project(model, x, args.layer, args.unit, args.rule, args.keep))[0]
    picture = lenses.side_by_side(pp.to_display(x, model.preprocessing or None),
                                  lenses.projection_display(projection, model.preprocessing or None),
                                  _png_scale(args.scale, x.shape[0]))
    images.save_png(picture, out)
    print(f"{args.layer} unit {args.unit} ({args.rule}, keep {args.keep}) on {source}: "
          f"projection max |value| {np.abs(projection).max():.4g}")
    print(f"wrote {out} (image | projection)")
    return 0


def _run_dream(args) -> int:
    out = check_png_output(args.out or f"out/dream_{args.layer}.png")
    model = load("caffenet", args.classifier)
    _lens_unit(model, args.layer, args.unit)
    x, source = _lens_image(args, model, args.layer, args.unit, strongest=False)
    dream = lenses.deep_dream(model, x, args.layer, args.unit, octaves=args.octaves, octave_scale=args.octave_scale,
                              steps_per_octave=args.steps, lr=args.lr, jitter=args.jitter, seed=args.seed)
    picture = pp.to_display(dream.image, model.preprocessing or None)
    images.save_png(lenses.enlarge(picture, _png_scale(args.scale, picture.shape[0])), out)
    what = args.layer if args.unit is None else f"{args.layer} unit {args.unit}"
    norms = ", ".join(f"{h}x{w}: {a:.4g} -> {b:.4g}"
                      for (h, w), a, b in zip(dream.sizes, dream.norm_before, dream.norm_after))
    print(f"dreamed {what} on {source}; L2 norm per octave: {norms}")
    print(f"wrote {out}")
    return 0


__all__ = ["build_parser", "main", "parse_neuron"]


if __name__ == "__main__":
    sys.exit(main())
