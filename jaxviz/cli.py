"""The ``jaxviz`` command: ``demo``, ``visualize`` (one unit), ``sweep`` (a layer), ``inverse-set``.

One argument tree: every verb is a subcommand of one parser, and every verb turns an expected failure
(bad argument, unknown layer, foreign folder) into one line ``jaxviz VERB: problem`` and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np

from jaxviz import inverse_set
from jaxviz.core import objectives
from jaxviz.io import images
from jaxviz.models import load
from jaxviz.models import preprocessing as pp
from jaxviz.recipes import registry
from jaxviz.workflows import demo as demo_job
from jaxviz.workflows import inverse_sets, sweep as sweeps
from jaxviz.workflows.runfolder import SweepError

EXPECTED = (ValueError, IndexError, KeyError, SweepError)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one parser, one subcommand per verb."""
    parser = argparse.ArgumentParser(prog="jaxviz", description="Synthesize the preferred inputs of neurons.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    _add_demo(verbs)
    _add_visualize(verbs)
    _add_sweep(verbs)
    _add_inverse_set(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and run a verb; expected failures print one line and return 2."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.run(args)
    except EXPECTED as err:
        print(f"jaxviz {args.verb}: {err}", file=sys.stderr)
        return 2


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
    p.add_argument("--steps", type=int, default=None, help=f"steps per run (default {demo_job.EMBEDDED_STEPS} "
                   f"embedded, {demo_job.REAL_STEPS} real)")


def _run_demo(args) -> int:
    demo_job.run_demo(args.out, args.classifier, args.generator, args.steps)
    return 0


# ----- visualize ------------------------------------------------------------------------------------------

VISUALIZE_METHODS = ("dgn_am", "pixel", "lucid")


def _add_visualize(verbs) -> None:
    p = _verb(verbs, "visualize", _run_visualize,
              help="one unit's preferred input, written as a PNG; embedded pair by default")
    p.add_argument("--layer", default="fc8", help="layer (Caffe blob name, e.g. fc8, fc6, conv5; default fc8)")
    p.add_argument("--unit", type=int, required=True, help="unit (or channel) index in the layer")
    p.add_argument("--method", choices=VISUALIZE_METHODS, default="dgn_am",
                   help="; ".join(f"{m}: {registry.METHODS[m].summary}" for m in VISUALIZE_METHODS)
                   + " (default dgn_am)")
    p.add_argument("--objective", choices=("activation", "log_softmax"), default="activation",
                   help="raw activation or log-softmax selectivity across the layer (default activation)")
    p.add_argument("--steps", type=int, default=None, help="steps (default: the method's original count)")
    p.add_argument("--seed", type=int, default=0)
    _model_options(p)
    p.add_argument("--scale", type=int, default=None, help="PNG magnification (default: 1, 8 for images < 64 px)")
    p.add_argument("--out", default=None, help="PNG path (default: out/<layer>_<unit>_<method>.png)")


def _run_visualize(args) -> int:
    clf = load("caffenet", args.classifier)
    gen = load("generator", args.generator) if registry.METHODS[args.method].needs_generator else None
    preset, _ = registry.build(args.method, clf, gen, args.layer, args.steps)
    make = objectives.unit if args.objective == "activation" else objectives.log_softmax
    result = preset.visualize(clf, make(args.layer, args.unit, position="center"), jax.random.key(args.seed))
    image = pp.to_display(np.asarray(result.image)[0], clf.preprocessing)
    scale = args.scale or (8 if max(image.shape[:2]) < 64 else 1)
    picture = images.to_pil(image)
    picture = picture.resize((picture.width * scale, picture.height * scale), resample=0)
    out = args.out or f"out/{args.layer}_{args.unit}_{args.method}.png"
    images.save_png(picture, out)
    failed = int(np.asarray(result.failed_step))
    print(f"{args.layer} unit {args.unit}: activation {float(np.asarray(result.final_activation)[0]):.4g}, "
          f"rank {int(np.asarray(result.rank)[0])} in its layer"
          + (f", stopped by NaN/Inf at step {failed}" if failed >= 0 else "") + f"; wrote {out}")
    return 0 if failed < 0 else 1


# ----- inverse-set ----------------------------------------------------------------------------------------

def _add_inverse_set(verbs) -> None:
    p = _verb(verbs, "inverse-set", _run_inverse_set, help="sample inputs whose activation lies in [z1, z2] "
              "(Hada & Carreira-Perpinan 2019); embedded pair by default")
    p.add_argument("--neuron", action="append", required=True, metavar="LAYER:UNIT:Z1:Z2[:ROW,COL|center|mean]",
                   help="a constrained neuron; repeat for an intersection (e.g. fc8:3:10:15)")
    p.add_argument("--n", type=int, default=500, help="samples (default 500)")
    p.add_argument("--k", type=int, default=10, help="codes per round (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.1, help="Adam step in code units (default 0.1)")
    p.add_argument("--diversity", choices=("encoder", "code", "none"), default="encoder")
    p.add_argument("--joint", action="store_true", help="optimize all n together (eq. 15; small n)")
    p.add_argument("--inner-steps", type=int, default=100, help="gradient steps per outer iteration (default 100)")
    p.add_argument("--max-outer", type=int, default=8)
    p.add_argument("--max-rounds", type=int, default=1000)
    _model_options(p)
    p.add_argument("--out", default="out/inverse_set", help="folder for the results (default: out/inverse_set)")


def parse_neuron(text: str) -> inverse_set.Constraint:
    """``LAYER:UNIT:Z1:Z2[:POSITION]`` -> a Constraint (POSITION: center, mean or ROW,COL)."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"--neuron {text!r}: expected LAYER:UNIT:Z1:Z2[:POSITION]")
    position = "center" if len(parts) == 4 else parts[4]
    if "," in position:
        position = tuple(int(v) for v in position.split(","))
    return inverse_set.Constraint(parts[0], int(parts[1]), float(parts[2]), float(parts[3]), position)


def _run_inverse_set(args) -> int:
    start = time.perf_counter()
    constraints = [parse_neuron(t) for t in args.neuron]
    config = inverse_set.InverseSetConfig(
        k=args.k, n=args.n, lr=args.lr, diversity=args.diversity, joint=args.joint,
        inner_steps=args.inner_steps, max_outer=args.max_outer, max_rounds=args.max_rounds)
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    result = inverse_set.sample_inverse_set(clf, gen, constraints, jax.random.key(args.seed), config)
    seconds = time.perf_counter() - start
    out = inverse_sets.save_results(result, args.out, clf.preprocessing,
                                    {"seconds": round(seconds, 1), "seed": args.seed})
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
    p.add_argument("--range", default=None, metavar="Z1:Z2", help="activation range, for --method inverse_set")
    p.add_argument("--n", type=int, default=50, help="samples per unit, for --method inverse_set (default 50)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds-per-unit", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=None, help="runs per compiled chunk (default: from memory)")
    p.add_argument("--max-chunks", type=int, default=None, help="stop after this many chunks (rerun resumes)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal outside CI)")
    _model_options(p)
    p.add_argument("--out", default="out/sweep", help="folder for the results (default: out/sweep)")


def _run_sweep(args) -> int:
    if args.method == "inverse_set":
        return _run_inverse_set_sweep(args)
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    units = sweeps.parse_units(args.units, sweeps.layer_width(clf, args.layer))
    config = sweeps.SweepConfig(args.layer, units, args.method, args.steps, args.seeds_per_unit, args.seed,
                                args.chunk_size)
    s = sweeps.sweep(clf, gen, config, args.out, progress=args.progress, max_chunks=args.max_chunks)
    done = (s.out_dir / "index.html").exists()
    print(f"{s.computed} of {s.runs} runs computed now, chunk size {s.chunk_size} on {s.devices} device(s), "
          f"{s.units_per_second:.2f} units/s")
    print(f"gallery: {s.out_dir / 'index.html'}" if done else "not finished; run the same command to resume")
    return 0


def _run_inverse_set_sweep(args) -> int:
    if not args.range or args.range.count(":") != 1:
        raise ValueError("--method inverse_set needs --range Z1:Z2")
    z1, z2 = (float(v) for v in args.range.split(":"))
    clf, gen = load("caffenet", args.classifier), load("generator", args.generator)
    units = sweeps.parse_units(args.units, sweeps.layer_width(clf, args.layer))
    config = inverse_sets.InverseSetSweepConfig(args.layer, units, z1, z2, n=args.n, seed=args.seed)
    rows = inverse_sets.sweep_inverse_sets(clf, gen, config, args.out, progress=args.progress,
                                           max_units=args.max_chunks)
    reached = sum(r["samples"] > 0 for r in rows)
    print(f"{len(rows)} of {len(units)} units done, {reached} reached [{z1:g}, {z2:g}]; "
          + (f"gallery: {args.out}/index.html" if len(rows) == len(units) else "run the same command to resume"))
    return 0


__all__ = ["build_parser", "main", "parse_neuron"]


if __name__ == "__main__":
    sys.exit(main())
