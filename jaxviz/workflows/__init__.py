"""Jobs that write folders (``sweep.sweep``, ``inverse_sets.sweep_inverse_sets``, ``demo.run_demo``): sweeps over a layer's units, inverse sets over units, the demo atlas.

Each builds on the run-folder protocol (``runfolder``: a manifest, atomically committed files, resume or
refuse) and on ``devices`` (free memory, chunk size, the batch mesh).
"""

from jaxviz.workflows.demo import run_demo
from jaxviz.workflows.inverse_sets import InverseSetSweepConfig, contact_sheet, save_results, sweep_inverse_sets
from jaxviz.workflows.runfolder import SweepError
from jaxviz.workflows.sweep import SweepConfig, SweepSummary, load_chunks, parse_units

__all__ = ["run_demo", "InverseSetSweepConfig", "contact_sheet", "save_results", "sweep_inverse_sets", "SweepError",
           "SweepConfig", "SweepSummary", "load_chunks", "parse_units"]
