"""Sweeps: chunked runs equal single runs, resume after a stop or SIGKILL, 4 CPU devices, bad input."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxviz import recipes
from jaxviz.core import loop
from jaxviz.recipes import registry
from jaxviz.workflows import devices, runfolder
from jaxviz.workflows import sweep as sw
from jaxviz.models import load
from jaxviz.models.model import code_bounds
from jaxviz.core.run import optimize as visualize, optimize_batch, unit_keys

from tests.conftest import REPO

# The reference sweep: 32 fc6 units of the embedded pair, pixel AM, few steps, 4 chunks of 8.
REF = sw.SweepConfig("fc6", tuple(range(32)), "pixel", steps=5, chunk_size=8)
FIELDS = ("unit", "seed_index", "image", "z", "final_activation", "rank", "activation", "best_objective")


@pytest.fixture(scope="module")
def models():
    return load("caffenet"), load("generator")


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "sweep"
    sw.sweep(*models, REF, out, progress=False)
    return out, sw.load_chunks(out)


def _same(a: dict, b: dict) -> None:
    for k in FIELDS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxviz", "sweep", *args]


def _ref_args(out) -> list[str]:
    return ["--layer", REF.layer, "--units", f"0-{len(REF.units) - 1}", "--method", REF.method,
            "--steps", str(REF.steps), "--chunk-size", str(REF.chunk_size), "--out", str(out), "--no-progress"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# ----- pure parts ---------------------------------------------------------------------------------------

def test_parse_units():
    assert sw.parse_units("all", 4) == (0, 1, 2, 3)
    assert sw.parse_units("0-2, 7", 10) == (0, 1, 2, 7)
    assert sw.parse_units([3, 1], 10) == (3, 1)
    with pytest.raises(IndexError, match="unit 10 is out of range"):
        sw.parse_units("5-10", 10)
    with pytest.raises(ValueError, match="twice"):
        sw.parse_units("1,1", 10)
    with pytest.raises(ValueError, match="expected"):
        sw.parse_units("a-b", 10)


def test_choose_chunk_size():
    # Memory-bound, a multiple of the devices, never more than the sweep needs.
    assert devices.choose_chunk_size(run_bytes=100, n_runs=1000, n_devices=4, memory_bytes=2 * 100 * 10) == 40
    assert devices.choose_chunk_size(100, 1000, 1, 10 ** 12) == devices.MAX_CHUNK
    assert devices.choose_chunk_size(100, 10, 4, 10 ** 12) == 12
    assert devices.choose_chunk_size(10 ** 12, 10, 4, 10) == 4


def _setup(models, method: str, n_runs: int = 64):
    classifier, generator = models
    preset, objective = registry.build(method, classifier, generator, "fc6", 3)
    targets, keys = unit_keys(0, list(range(n_runs)))
    return classifier, preset, objective, targets, keys


def _xla_memory(models, method: str) -> devices.StepMemory:
    classifier, preset, objective, targets, keys = _setup(models, method)
    parts = loop.compiled_parts(classifier.function, objective, preset.param, preset.method, True, False)
    return devices.measure_step_memory(parts, classifier.params, preset.aux_params, targets, keys, runs=(2, 8))


@pytest.mark.parametrize("method", ["pixel", "dgn_am"])
def test_the_chunk_size_estimate_covers_what_xla_allocates_per_run(models, method):
    """Where memory does not decide, the chunk size comes from ``estimate_run_bytes`` alone: it must not be
    less than the bytes each further run of a chunk adds to the compiled step (XLA's buffer assignment)."""
    classifier, preset, *_ = _setup(models, method)
    measured = _xla_memory(models, method)
    estimate = devices.estimate_run_bytes(classifier, preset, "fc6")
    assert measured is not None and measured.per_run > 0 and measured.fixed > 0
    assert measured.per_run <= estimate <= 8 * measured.per_run, (method, measured, estimate)  # safe, not wildly


def test_where_memory_decides_the_chunk_size_follows_xlas_count(models):
    classifier, preset, objective, targets, keys = _setup(models, "pixel", n_runs=256)
    estimate = devices.estimate_run_bytes(classifier, preset, "fc6")
    measure = devices.step_memory(classifier, preset, objective, targets, keys)
    free = 2 * 20 * estimate                       # room for 20 runs by the estimate
    chunk = devices.default_chunk_size(estimate, 256, 1, free, measure)
    m = measure()
    assert chunk == devices.choose_chunk_size(m.per_run, 256, 1, free, fixed_bytes=m.fixed)
    assert 20 < chunk < 256                        # more than the estimate allows, still bound by memory
    assert m.fixed + chunk * m.per_run <= free // 2 < m.fixed + (chunk + 1) * m.per_run
    # the size it chose is not refused when asked for by name (a resume names it), a far larger one is
    assert devices.chunk_size_problem(chunk, estimate, 1, free, measure) is None
    assert devices.chunk_memory_problem(chunk, estimate, 1, free) is not None   # the estimate alone would
    assert "XLA's count" in devices.chunk_size_problem(100 * chunk, estimate, 1, free, measure)


def test_where_memory_does_not_decide_nothing_is_compiled_to_measure():
    def measure():
        raise AssertionError("compiled a step to measure its memory")
    assert devices.default_chunk_size(100, 1000, 1, 10 ** 12, measure) == devices.MAX_CHUNK
    assert devices.default_chunk_size(100, 10, 2, 10 ** 12, measure) == 10
    assert devices.chunk_size_problem(8, 100, 1, 10 ** 12, measure) is None


def test_a_sweep_with_little_free_memory_takes_the_measured_chunk_size(models, tmp_path, monkeypatch):
    classifier, preset, objective, targets, keys = _setup(models, "pixel", n_runs=256)
    estimate = devices.estimate_run_bytes(classifier, preset, "fc6")
    monkeypatch.setattr(sw, "device_memory_bytes", lambda device: 2 * 20 * estimate)
    summary = sw.sweep(*models, sw.SweepConfig("fc6", tuple(range(256)), "pixel", steps=3), tmp_path / "s",
                       progress=False, max_chunks=0)
    m = devices.step_memory(classifier, preset, objective, targets, keys)()
    assert summary.chunk_size == devices.choose_chunk_size(m.per_run, 256, 1, 2 * 20 * estimate,
                                                           fixed_bytes=m.fixed) > 20


def test_labels():
    assert sw.unit_labels("fc8", 10) == [str(i) for i in range(10)]
    names = sw.unit_labels("fc8", 1000)
    assert len(names) == 1000 and names[0].startswith("tench")
    assert sw.unit_labels("fc6", 4096) is None


# ----- results ------------------------------------------------------------------------------------------

@pytest.mark.slow  # about 30-60 s on a 2-core CPU
def test_sweep_of_64_units_equals_64_single_runs(models, tmp_path):
    clf, gen = models
    config = sw.SweepConfig("fc6", tuple(range(64)), "pixel", steps=4, chunk_size=24)  # 3 chunks, last short
    sw.sweep(clf, gen, config, tmp_path / "s", progress=False)
    data = sw.load_chunks(tmp_path / "s")
    preset, objective = registry.build("pixel", clf, gen, "fc6", 4)
    assert objective.unit_layer == "fc6:pre"  # a rectified layer is optimized through its pre-activation
    targets, keys = unit_keys(0, range(64))
    for i in range(64):
        single = visualize(clf, objective, preset.param, key=keys[i], method=preset.method, target=targets[i])
        np.testing.assert_allclose(data["image"][i], np.asarray(single.image), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(data["final_activation"][i], np.asarray(single.final_activation),
                                   rtol=1e-4, atol=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "s" / runfolder.RESULTS).read_text().splitlines()]
    assert [r["unit"] for r in rows] == list(range(64))
    assert all((tmp_path / "s" / r["image"]).is_file() and (tmp_path / "s" / r["code"]).is_file() for r in rows)
    meta = json.loads((tmp_path / "s" / runfolder.METADATA).read_text())
    assert meta["chunk_size"] == 24 and meta["units_per_second"] > 0


def test_short_last_chunk_does_not_recompile(models, tmp_path, monkeypatch):
    clf, gen = models
    config = sw.SweepConfig("fc8", (0, 1, 2, 3, 4), "pixel", steps=2, chunk_size=2)  # chunks of 2, 2, 1
    programs, original = [], loop._compile_run
    loop._COMPILED.clear()

    def spy(*args):
        programs.append(original(*args))
        return programs[-1]
    monkeypatch.setattr(loop, "_compile_run", spy)
    sw.sweep(clf, gen, config, tmp_path / "s", progress=False)
    assert len(programs) == 1 and programs[0].compilations() == 1  # one setup, compiled once
    assert len(sw.load_chunks(tmp_path / "s")["unit"]) == 5


def test_resume_after_stop_equals_uninterrupted(models, reference, tmp_path):
    out = tmp_path / "s"
    first = sw.sweep(*models, REF, out, progress=False, max_chunks=1)
    assert first.computed == 8 and not (out / "index.html").exists()
    second = sw.sweep(*models, REF, out, progress=False)
    assert second.computed == len(REF.units) - 8  # nothing finished is redone
    _same(sw.load_chunks(out), reference[1])
    assert (out / "index.html").exists()


def test_refuses_a_folder_of_another_sweep(models, reference, tmp_path):
    out, _ = reference
    with pytest.raises(runfolder.SweepError, match="different sweep.*steps: 5 there vs 6 asked"):
        sw.sweep(*models, sw.SweepConfig("fc6", REF.units, "pixel", steps=6, chunk_size=8), out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(runfolder.SweepError, match="not empty"):
        sw.sweep(*models, REF, tmp_path / "other", progress=False)


@pytest.mark.slow
def test_the_objective_is_part_of_the_job(models, reference, tmp_path):
    """--objective log_softmax runs the selectivity objective; its folder is another job than auto's."""
    out, chunks = reference
    with pytest.raises(runfolder.SweepError, match="different sweep.*objective"):
        sw.sweep(*models, dataclasses.replace(REF, objective="log_softmax"), out, progress=False)
    config = sw.SweepConfig("fc6", tuple(range(0, 256, 32)), "pixel", steps=5, chunk_size=8)
    auto = sw.load_chunks(sw.sweep(*models, config, tmp_path / "auto", progress=False).out_dir)
    lsm = sw.load_chunks(sw.sweep(*models, dataclasses.replace(config, objective="log_softmax"),
                                  tmp_path / "lsm", progress=False).out_dir)
    assert json.loads((tmp_path / "lsm" / runfolder.MANIFEST).read_text())["objective"] == "log_softmax"
    assert "objective" not in json.loads((tmp_path / "auto" / runfolder.MANIFEST).read_text())  # old folders resume
    # What each run maximized: a log-probability (never above 0) for log_softmax, the raw pre-activation for auto.
    assert np.all(lsm["best_objective"] <= 0) and auto["best_objective"].max() > 0
    assert not np.array_equal(lsm["image"], auto["image"])


def test_out_of_range_units_write_nothing(models, tmp_path):
    with pytest.raises(IndexError, match="unit 10 is out of range"):
        sw.sweep(*models, sw.SweepConfig("fc8", (3, 10), "pixel", steps=2), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_unwritable_folder_is_a_clear_error(models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(runfolder.SweepError, match="cannot write the sweep manifest"):
        sw.sweep(*models, REF, blocker / "s", progress=False)


def test_full_disk_keeps_finished_chunks_and_resumes(models, reference, tmp_path, monkeypatch):
    out = tmp_path / "s"
    real = sw.atomic_write_bytes

    def failing(path, data):
        if path.name == "chunk_00001.npz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)
    monkeypatch.setattr(sw, "atomic_write_bytes", failing)
    with pytest.raises(runfolder.SweepError, match="cannot write chunk 1 .*No space left.*resume"):
        sw.sweep(*models, REF, out, progress=False)
    assert sorted(p.name for p in (out / runfolder.CHUNKS).iterdir()) == ["chunk_00000.npz"]  # no temp file left
    monkeypatch.setattr(sw, "atomic_write_bytes", real)
    assert sw.sweep(*models, REF, out, progress=False).computed == len(REF.units) - 8
    _same(sw.load_chunks(out), reference[1])


# ----- processes: SIGKILL and 4 devices -------------------------------------------------------------------

@pytest.mark.slow  # about 30-60 s on a 2-core CPU
def test_sigkill_then_rerun_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(_cli(*_ref_args(out)), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (out / runfolder.CHUNKS / "chunk_00000.npz").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "the sweep wrote no chunk in 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (out / runfolder.CHUNKS).glob("chunk_*.npz"))
    assert 1 <= len(done) < 4, done  # killed mid-sweep
    rerun = subprocess.run(_cli(*_ref_args(out)), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(REF.units) - 8 * len(done)} of {len(REF.units)} runs computed now" in rerun.stdout
    data = sw.load_chunks(out)
    assert sorted(data["unit"].tolist()) == list(REF.units)  # exactly one result per unit
    _same(data, reference[1])
    rows = (out / runfolder.RESULTS).read_text().splitlines()
    assert len(rows) == len(REF.units)


@pytest.mark.slow  # about 30-60 s on a 2-core CPU
def test_four_cpu_devices_equal_one(models, tmp_path):
    """A chunk sharded over 4 devices equals the 1-device run (float reassociation aside).

    Each device runs its quarter of the chunk through a program compiled for that batch size, so the sums
    may be ordered differently. A method with a continuous update keeps that at float noise; the pixel
    method's percentile clip would amplify a last-bit difference into a flipped pixel, so Lucid's
    Fourier image with Adam is the one compared here. Adam's normalized step still lifts last-bit
    differences in near-zero gradients to steps of its learning rate: a process with 4 host devices sums
    differently even for one device's batch (the same 2 runs, no transform: z 9e-7 apart after 4 steps),
    and how far that goes depends on the CPU (seen on one machine: 3e-4 in 65 of 12544 pixels; on a
    2-core AVX2 EPYC: one run of 16 with its image 0.014 and its variables 7e-4 apart, its activation
    1e-6). So each run's image and variables are compared by their relative distance, which a run on the
    wrong shard (another unit's image) would take to about 1, and the activations to 1e-4.
    """
    config = sw.SweepConfig("fc6", tuple(range(16)), "lucid", steps=4, chunk_size=8)
    sw.sweep(*models, config, tmp_path / "one", progress=False)
    out = tmp_path / "four"
    args = ["--layer", "fc6", "--units", "0-15", "--method", "lucid", "--steps", "4", "--chunk-size", "8",
            "--out", str(out), "--no-progress"]
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = subprocess.run(_cli(*args), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "on 4 device(s)" in run.stdout
    data, ref = sw.load_chunks(out), sw.load_chunks(tmp_path / "one")
    np.testing.assert_array_equal(data["unit"], ref["unit"])
    for k in ("final_activation", "best_objective"):
        np.testing.assert_allclose(data[k], ref[k], rtol=1e-4, atol=1e-4, err_msg=k)
    for k in ("image", "best_image", "z"):
        apart = _relative_distances(data[k], ref[k])
        assert apart.max() < 1e-2, (k, np.round(apart, 5))
    # ... which tells the runs apart: each is that far from every other unit's run
    shifted = [_relative_distances(np.roll(ref["image"], s, axis=0), ref["image"]).min() for s in range(1, 16)]
    assert min(shifted) > 0.1, shifted


def _relative_distances(a, b) -> np.ndarray:
    """Per run (leading axis): |a - b| / |b|, Euclidean."""
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow  # the whole demo: about 40 s on a 2-core CPU
def test_demo_writes_the_atlas_gallery(tmp_path):
    from jaxviz import cli

    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--steps", "4"]) == 0
    page = (tmp_path / "demo" / "index.html").read_text()
    assert "reconstructions.png" in page and page.count('"unit":') == 20  # 10 classes x 2 methods
    # Each class's synthetic images beside its top real digits and their DeconvNet projections.
    assert "evidence.png" in page and (tmp_path / "demo" / "evidence.png").is_file()
    atlas = json.loads((tmp_path / "demo" / "atlas.json").read_text())
    assert {m: atlas[m]["units"] for m in ("dgn_am", "pixel")} == {"dgn_am": 10, "pixel": 10}


# ----- the registry's default objectives --------------------------------------------------------------------

def test_dgn_am_defaults_to_the_tempered_selectivity_on_a_rectified_hidden_layer(models):
    clf, gen = models
    _, auto = registry.build("dgn_am", clf, gen, "fc6", 3)
    assert auto.unit_layer == "fc6:pre" and f"T={registry.TEMPERATURE:g}" in auto.name
    acts = {"fc6:pre": np.array([[3.0, 1.0, -2.0]], np.float32)}
    t = registry.TEMPERATURE
    want = t * (3.0 / t - np.log(np.exp(np.array([3.0, 1.0, -2.0]) / t).sum()))
    assert float(auto(acts, 0)) == pytest.approx(want, rel=1e-6)
    # the other names keep what they were: pre (the earlier auto), raw, log_softmax at T = 1
    assert registry.build("dgn_am", clf, gen, "fc6", 3, kind="pre")[1].name == "unit(fc6:pre, target)"
    assert registry.build("dgn_am", clf, gen, "fc6", 3, kind="unit")[1].name == "unit(fc6, target)"
    assert registry.build("dgn_am", clf, gen, "fc6", 3, kind="log_softmax")[1].name == "log_softmax(fc6:pre, None)"
    # class layers and the other methods keep the unit itself
    assert registry.build("dgn_am", clf, gen, "fc8", 3)[1].name == "unit(fc8, target)"
    assert registry.build("pixel", clf, gen, "fc6", 3)[1].name == "unit(fc6:pre, target)"
    assert set(registry.OBJECTIVE_NAMES.values()) == set(registry.KINDS)
    with pytest.raises(ValueError, match="expected one of unit, pre, log_softmax, tempered_log_softmax"):
        registry.unit_objective(clf, "fc6", "margin")


def test_a_folder_of_the_earlier_dgn_am_default_is_not_resumed_with_the_new_one(models, tmp_path):
    config = sw.SweepConfig("fc6", (0, 1), "dgn_am", steps=2, chunk_size=2)
    sw.sweep(*models, config, tmp_path / "auto", progress=False, max_chunks=0)
    assert json.loads((tmp_path / "auto" / runfolder.MANIFEST).read_text())["auto_objective"] == "tempered_log_softmax"
    # --objective pre writes what the earlier auto wrote (neither objective nor auto_objective)
    old = tmp_path / "old"
    sw.sweep(*models, dataclasses.replace(config, objective="pre"), old, progress=False)
    manifest = json.loads((old / runfolder.MANIFEST).read_text())
    assert "objective" not in manifest and "auto_objective" not in manifest
    with pytest.raises(runfolder.SweepError, match="different sweep.*auto_objective"):
        sw.sweep(*models, config, old, progress=False)
    assert sw.sweep(*models, dataclasses.replace(config, objective="pre"), old, progress=False).computed == 0


def test_dgn_am_on_a_hidden_layer_runs_in_the_wider_box_and_class_layers_keep_the_paper(models):
    clf, gen = models
    assert registry.method_settings("dgn_am", clf, "fc6") == registry.HIDDEN_LAYER_SETTINGS
    assert registry.method_settings("dgn_am", clf, "fc8") == {} == registry.method_settings("pixel", clf, "fc6")
    s = registry.HIDDEN_LAYER_SETTINGS
    wide = recipes.dgn_am(gen, bounds=s["bound_scale"] * code_bounds(gen), steps=6, lr_start=s["lr_start"],
                          decay=s["decay"])
    targets, keys = unit_keys(0, [3, 7])

    def codes(preset, objective):
        return np.asarray(optimize_batch(clf, objective, preset.param, keys=keys, targets=targets,
                                         method=preset.method, aux_params=preset.aux_params).z)

    hidden_preset, hidden_objective = registry.build("dgn_am", clf, gen, "fc6", 6)
    hidden = codes(hidden_preset, hidden_objective)
    np.testing.assert_array_equal(hidden, codes(wide, hidden_objective))
    # the wider box is used: some code unit ends above the paper's bound, which the paper's preset never does
    paper = codes(recipes.dgn_am(gen, steps=6), hidden_objective)
    assert (hidden > code_bounds(gen) + 1e-6).any() and (paper <= code_bounds(gen) + 1e-6).all()
    class_preset, class_objective = registry.build("dgn_am", clf, gen, "fc8", 6)
    np.testing.assert_array_equal(codes(class_preset, class_objective),
                                  codes(recipes.dgn_am(gen, steps=6), class_objective))


def test_a_hidden_layer_folder_written_in_the_paper_box_is_not_resumed_in_the_wider_one(models, tmp_path):
    config = sw.SweepConfig("fc6", (0, 1), "dgn_am", steps=2, chunk_size=2)
    sw.sweep(*models, config, tmp_path / "fc6", progress=False, max_chunks=0)
    path = tmp_path / "fc6" / runfolder.MANIFEST
    manifest = json.loads(path.read_text())
    assert manifest["method_settings"] == registry.HIDDEN_LAYER_SETTINGS
    del manifest["method_settings"]  # what a folder started before the wider box holds
    path.write_text(json.dumps(manifest))
    with pytest.raises(runfolder.SweepError, match="different sweep.*method_settings"):
        sw.sweep(*models, config, tmp_path / "fc6", progress=False)
    # a class layer records nothing: its folders from before resume as they were
    fc8 = tmp_path / "fc8"
    sw.sweep(*models, sw.SweepConfig("fc8", (0,), "dgn_am", steps=2), fc8, progress=False, max_chunks=0)
    assert "method_settings" not in json.loads((fc8 / runfolder.MANIFEST).read_text())


@pytest.mark.slow
def test_the_default_fc6_objective_puts_more_units_on_top_than_the_raw_one(models):
    """On 8 fc6 units of the embedded pair (DGN-AM, 100 steps): the target is the layer's strongest unit on
    the best image more often with the default objective than with the raw activation (README, Sweeps)."""
    clf, gen = models
    units = list(range(0, 256, 32))
    targets, keys = unit_keys(0, units)
    on_top = {}
    for kind in (None, "unit"):
        preset, objective = registry.build("dgn_am", clf, gen, "fc6", 100, kind=kind)
        result = optimize_batch(clf, objective, preset.param, keys=keys, targets=targets, method=preset.method,
                                aux_params=preset.aux_params)
        fc6 = np.asarray(clf.function(clf.params, result.best_image[:, 0], ("fc6",))["fc6"])
        on_top[kind] = int((fc6.argmax(-1) == np.asarray(units)).sum())
    assert on_top[None] > on_top["unit"] and on_top[None] >= 4, on_top
