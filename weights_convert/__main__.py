"""Command line: ``python -m weights_convert {caffenet,generator} IN.caffemodel OUT_DIR [--prototxt P] [...]``.

Every expected failure (a bad or damaged input file, a refused or unwritable output folder, a bad
argument) is one line ``weights_convert: problem (place)`` on stderr and exit status 2; the output
folder is left as it was.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from jaxviz.models.checkpoint import CheckpointError
from jaxviz.models.generator import CODE_LAYERS
from weights_convert.convert import ARCHITECTURES, check_destination, convert
from weights_convert.errors import ConversionError, shorten

PROG = "weights_convert"
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with errors in the one-line format (``weights_convert: problem (argument X)``)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        m = re.match(r"argument (\S+): (.*)", message, re.S)
        text = f"{m[2]} (argument {m[1]})" if m else message
        self.exit(EXIT_ERROR, f"{PROG}: {shorten(text, 400)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m weights_convert", description="Convert Caffe weights to a jaxviz model folder.")
    parser.add_argument("architecture", choices=ARCHITECTURES)
    parser.add_argument("caffemodel", help="binary .caffemodel file (V1 or V2 format)")
    parser.add_argument("out_dir", help="folder to write (orbax params/ + metadata.json); an existing one is "
                        "replaced only when it holds a converted model of the same architecture")
    parser.add_argument("--prototxt", help="deploy prototxt; optional, the architecture is known")
    parser.add_argument("--force", action="store_true",
                        help="replace the output folder whatever it holds (still only once the new one is complete)")
    parser.add_argument("--code-layer", choices=CODE_LAYERS,
                        help="generators: the CaffeNet layer its codes are (default: the one its shape implies: "
                        "pool5 for a map, fc8 for 1000 units, else fc6; say fc7 for the fc7 generator)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="convert weights that hold NaN or Inf (with a warning) instead of refusing them")
    return parser


def _oserror(err: OSError) -> str:
    place = err.filename or ""
    return f"{err.strerror or err}" + (f" ({place})" if place else "")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, convert, report; exit status 2 with a one-line message on any expected failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.code_layer is not None and args.architecture != "generator":
        parser.error(f"argument --code-layer: only generators have a code layer, not a {args.architecture}")
    try:
        action = check_destination(args.out_dir, args.architecture, args.force)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = convert(args.architecture, args.caffemodel, args.out_dir, args.prototxt, force=args.force,
                          allow_nonfinite=args.allow_nonfinite, code_layer=args.code_layer)
    except (ConversionError, CheckpointError) as err:
        print(f"{PROG}: {shorten(err)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        print(f"{PROG}: {shorten(_oserror(err))}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"{PROG}: out of memory reading {args.caffemodel}", file=sys.stderr)
        return EXIT_ERROR
    for w in caught:
        print(f"{PROG}: warning: {shorten(w.message)}", file=sys.stderr)
    verb = {"create": "wrote", "replace": "replaced the earlier model with", "force": "replaced the folder with"}
    print(f"{verb[action]} {args.architecture} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
