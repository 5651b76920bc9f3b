"""Inverse sets over several units: every sample in range by a fresh pass, resume, foreign folders refused."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz.models as jm
from jaxviz.models import crop_to_classifier
from jaxviz.workflows.runfolder import SweepError
from jaxviz.workflows.inverse_sets import InverseSetSweepConfig, sweep_inverse_sets, unit_file

CONFIG = InverseSetSweepConfig("fc8", (3, 8), 10.0, 15.0, n=12, k=4)


@pytest.mark.slow
def test_inverse_set_sweep_samples_in_range_and_resumes(tmp_path):
    clf, gen = jm.load("caffenet"), jm.load("generator")
    out = tmp_path / "sets"
    first = sweep_inverse_sets(clf, gen, CONFIG, out, progress=False, max_units=1)
    assert [r["unit"] for r in first] == [3] and not (out / "index.html").exists()
    committed = unit_file(out, 3).stat().st_mtime_ns
    rows = sweep_inverse_sets(clf, gen, CONFIG, out, progress=False)
    assert unit_file(out, 3).stat().st_mtime_ns == committed          # finished units are not redone
    assert [r["unit"] for r in rows] == [3, 8] and (out / "index.html").exists()
    for unit in (3, 8):
        codes = np.load(unit_file(out, unit))["codes"]
        assert len(codes) == CONFIG.n
        images = crop_to_classifier(gen(jnp.asarray(codes), ("deconv0",))["deconv0"], gen.config)
        f = np.asarray(clf(images, ("fc8",))["fc8"][:, unit])
        assert np.all((f >= CONFIG.z1 - 1e-3) & (f <= CONFIG.z2 + 1e-3)), f
    with pytest.raises(SweepError, match="different sweep"):
        sweep_inverse_sets(clf, gen, dataclasses.replace(CONFIG, z2=20.0), out, progress=False)


def test_inverse_set_sweep_rejects_bad_input(tmp_path):
    clf, gen = jm.load("caffenet"), jm.load("generator")
    with pytest.raises(ValueError, match="empty range"):
        sweep_inverse_sets(clf, gen, dataclasses.replace(CONFIG, z1=20.0), tmp_path / "a")
    with pytest.raises(IndexError, match="unit 10 is out of range"):
        sweep_inverse_sets(clf, gen, dataclasses.replace(CONFIG, units=(10,)), tmp_path / "b")
