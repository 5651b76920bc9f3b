"""``python -m jaxviz``: the command line."""

import sys

from jaxviz.cli import main

sys.exit(main())
