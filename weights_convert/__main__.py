"""Command line: ``python -m weights_convert {caffenet,generator} IN.caffemodel OUT_DIR [--prototxt P]``."""

from __future__ import annotations

import argparse
import sys

from weights_convert.convert import ARCHITECTURES, convert
from weights_convert.errors import ConversionError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, convert, report; exit status 1 with the error's message on bad input."""
    parser = argparse.ArgumentParser(prog="python -m weights_convert",
                                     description="Convert Caffe weights to a jaxviz model folder.")
    parser.add_argument("architecture", choices=ARCHITECTURES)
    parser.add_argument("caffemodel", help="binary .caffemodel file (V1 or V2 format)")
    parser.add_argument("out_dir", help="folder to write (orbax params/ + metadata.json)")
    parser.add_argument("--prototxt", help="deploy prototxt; optional, the architecture is known")
    args = parser.parse_args(argv)
    try:
        out = convert(args.architecture, args.caffemodel, args.out_dir, args.prototxt)
    except (ConversionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.architecture} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
