"""The ``jaxviz`` command: ``jaxviz demo`` and the other verbs."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch a verb."""
    parser = argparse.ArgumentParser(prog="jaxviz", description="Synthesize the preferred inputs of neurons.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser("demo", help="run the main job on the embedded default models")
    demo.add_argument("--out", default="out/demo", help="folder for the results (default: out/demo)")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        from jaxviz import demo as demo_module

        return demo_module.main(["--out", args.out])
    return 2


if __name__ == "__main__":
    sys.exit(main())
