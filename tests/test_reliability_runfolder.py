"""Reliability of run folders: damaged or foreign files are named and recomputed, claims split the work,
temporary files of killed runs are removed, inverse-set folders never mix two runs, the gallery renders.

Each test reproduces a finding of the adversarial run against a small sweep of the embedded pair (fc8
units 0-3, pixel AM, 2 steps, chunks of 2) and checks the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import jaxviz.models as jm
from jaxviz.inverse_set.sampler import InverseSetResult
from jaxviz.io import atomic, gallery, images
from jaxviz.workflows import inverse_sets, runfolder
from jaxviz.workflows import sweep as sw
from tests.helpers import faults

CONFIG = sw.SweepConfig("fc8", (0, 1, 2, 3), "pixel", steps=2, chunk_size=2)
FIELDS = ("unit", "seed_index", "image", "best_image", "z", "final_activation", "rank", "activation")


@pytest.fixture(scope="module")
def models():
    return jm.load("caffenet"), jm.load("generator")


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "sweep"
    sw.sweep(*models, CONFIG, out, progress=False)
    return out, sw.load_chunks(out), faults.files_of(out / runfolder.UNITS_DIR)


def _copy(reference, tmp_path):
    return shutil.copytree(reference[0], tmp_path / "s")


def _same(data: dict, ref: dict) -> None:
    assert sorted(data) == sorted(ref)
    for k in FIELDS:
        np.testing.assert_array_equal(data[k], ref[k], err_msg=k)


def _resume(models, out, config=CONFIG, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = sw.sweep(*models, config, out, progress=False, **kwargs)
    return summary, [str(w.message) for w in caught if issubclass(w.category, runfolder.DamagedFileWarning)]


# ----- damaged, foreign and stray chunk files ------------------------------------------------------------

def _garbage(path):
    path.write_bytes(b"not a zip file at all")


def _cut(path):
    faults.truncate(path, path.stat().st_size // 2)


def _empty(path):
    faults.truncate(path, 0)


def _flip_in_data(path):
    faults.flip_bit(path, (path.stat().st_size // 2) * 8 + 3)


def _flip_in_directory(path):
    faults.flip_bit(path, (path.stat().st_size - 7) * 8)  # the zip's central directory offset


@pytest.mark.parametrize("damage", [_garbage, _cut, _empty, _flip_in_data, _flip_in_directory])
def test_a_damaged_chunk_is_named_then_recomputed(models, reference, tmp_path, damage):
    out = _copy(reference, tmp_path)
    chunk = runfolder.chunk_path(out, 1)
    damage(chunk)
    with pytest.raises(runfolder.SweepError, match=r"chunk_00001\.npz (is damaged|does not hold).*run the same sweep"):
        sw.load_chunks(out)
    summary, warned = _resume(models, out)
    assert summary.computed == 2 and any("chunk_00001.npz" in w and "computing it again" in w for w in warned)
    _same(sw.load_chunks(out), reference[1])
    assert [p.name for p in (out / runfolder.CHUNKS).glob("chunk_00001.npz.damaged-*")]  # kept for inspection
    assert faults.leftovers(out) == []


def test_a_chunk_of_another_sweep_is_refused_and_recomputed(models, reference, tmp_path):
    other = tmp_path / "other"
    sw.sweep(*models, sw.SweepConfig("fc8", (4, 5, 6, 7), "pixel", steps=2, chunk_size=2), other, progress=False)
    out = _copy(reference, tmp_path)
    shutil.copy(runfolder.chunk_path(other, 1), runfolder.chunk_path(out, 1))  # same name, another job
    with pytest.raises(runfolder.SweepError, match="chunk_00001.npz belongs to another job"):
        sw.load_chunks(out)
    summary, warned = _resume(models, out)
    assert summary.computed == 2 and any("another job" in w for w in warned)
    _same(sw.load_chunks(out), reference[1])


def test_a_legacy_chunk_without_checksums_is_checked_by_its_runs(models, reference, tmp_path):
    out = _copy(reference, tmp_path)
    with np.load(runfolder.chunk_path(out, 0)) as z:
        arrays = {k: z[k] for k in z.files if k != runfolder.CHUNK_META}
    atomic.atomic_write_bytes(runfolder.chunk_path(out, 0), atomic.npz_bytes(arrays))  # as written before
    _same(sw.load_chunks(out), reference[1])
    arrays["unit"] = arrays["unit"] + 2
    atomic.atomic_write_bytes(runfolder.chunk_path(out, 0), atomic.npz_bytes(arrays))
    with pytest.raises(runfolder.SweepError, match="does not hold the runs of its index"):
        sw.load_chunks(out)


def test_a_stray_chunk_file_is_never_read(models, reference, tmp_path):
    out = _copy(reference, tmp_path)
    shutil.copy(runfolder.chunk_path(out, 0), runfolder.chunk_path(out, 7))
    data = sw.load_chunks(out)
    assert data["unit"].tolist() == [0, 1, 2, 3]  # not units 0 and 1 twice
    summary, warned = _resume(models, out)
    assert summary.computed == 0 and any("ignoring chunk_00007.npz" in w for w in warned)
    rows = (out / runfolder.RESULTS).read_text().splitlines()
    assert [json.loads(r)["unit"] for r in rows] == [0, 1, 2, 3]


# ----- unit files --------------------------------------------------------------------------------------------

def test_truncated_or_missing_unit_files_are_rewritten(models, reference, tmp_path):
    out = _copy(reference, tmp_path)
    units = out / runfolder.UNITS_DIR
    _cut(units / "unit_00001_s0.npy")
    _cut(units / "unit_00002_s0.png")
    (units / "unit_00003_s0.png").unlink()
    faults.flip_bit(units / "unit_00000_s0.png", 8 * 60)
    summary, warned = _resume(models, out)
    assert summary.computed == 0
    assert faults.files_of(units) == reference[2]  # every unit file whole again, bit for bit
    assert any("unit_00001_s0.npy" in w for w in warned) and any("unit_00002_s0.png" in w for w in warned)
    assert any("unit_00000_s0.png" in w for w in warned)
    assert not any("free space" in w for w in warned)


# ----- manifests -----------------------------------------------------------------------------------------

def test_a_manifest_with_a_bad_chunk_size_is_named(models, reference, tmp_path):
    out = _copy(reference, tmp_path)
    manifest = json.loads((out / runfolder.MANIFEST).read_text())
    manifest["chunk_size"] = -1  # what --chunk-size -1 used to store
    (out / runfolder.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(runfolder.SweepError, match=r"manifest.json records chunk size -1.*delete it"):
        sw.sweep(*models, sw.SweepConfig("fc8", (0, 1, 2, 3), "pixel", steps=2), out, progress=False)
    (out / runfolder.MANIFEST).write_text('{"format": ')
    with pytest.raises(runfolder.SweepError, match=r"manifest.json is damaged"):
        sw.sweep(*models, CONFIG, out, progress=False)
    with pytest.raises(runfolder.SweepError, match=r"manifest.json is damaged"):
        sw.load_chunks(out)


def test_an_output_path_that_is_a_file_is_named(models, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(runfolder.SweepError, match="is a file, not a folder"):
        sw.sweep(*models, CONFIG, tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "x"


# ----- processes sharing a folder: claims, stale files ----------------------------------------------------

@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _claim(out, index, pid):
    path = runfolder.claim_path(out, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": atomic.host_name(), "start": atomic.process_start(pid),
                                "time": time.time()}))
    return path


def test_a_chunk_claimed_by_a_live_process_is_left_to_it(models, reference, tmp_path, live_pid):
    out = tmp_path / "s"
    sw.sweep(*models, CONFIG, out, progress=False, max_chunks=0)  # the folder and manifest only
    claim = _claim(out, 0, live_pid)
    summary, _ = _resume(models, out)
    assert summary.computed == 2 and summary.busy and f"pid {live_pid}" in summary.busy[0]
    assert not runfolder.chunk_path(out, 0).exists() and not (out / "index.html").exists()
    assert claim.exists()  # not ours to remove


def test_a_claim_of_a_dead_process_is_taken_over(models, reference, tmp_path):
    out = tmp_path / "s"
    sw.sweep(*models, CONFIG, out, progress=False, max_chunks=0)
    _claim(out, 0, _dead_pid())
    summary, _ = _resume(models, out)
    assert summary.computed == 4 and summary.busy == ()
    _same(sw.load_chunks(out), reference[1])
    assert (out / "index.html").exists() and list((out / runfolder.CHUNKS).glob("*.claim")) == []


def test_the_claim_protocol(tmp_path, live_pid):
    path = tmp_path / "chunk_00000.claim"
    assert runfolder.try_claim(path) is None  # ours now
    assert runfolder.try_claim(path) is not None  # a second claim by a live owner (ourselves) is refused
    runfolder.release_claim(path)
    assert not path.exists()
    path.write_text(json.dumps({"pid": live_pid, "host": atomic.host_name(), "start": atomic.process_start(live_pid)}))
    assert f"pid {live_pid}" in runfolder.try_claim(path)
    runfolder.release_claim(path)  # not ours: kept
    assert path.exists()
    path.write_text(json.dumps({"pid": live_pid, "host": atomic.host_name(), "start": -5}))  # pid reused
    assert runfolder.try_claim(path) is None
    path.unlink()
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "time": time.time()}))
    assert "another-host" in runfolder.try_claim(path)  # another host's process, heartbeat recent: live
    gone = time.time() - runfolder.CLAIM_STALE_SECONDS - 5
    os.utime(path, (gone, gone))  # that host stopped touching its claim (killed, or the host went down)
    assert runfolder.try_claim(path) is None  # taken over
    runfolder.release_claim(path)


def test_a_held_claim_is_kept_alive_by_its_heartbeat(tmp_path, monkeypatch):
    """A chunk that takes longer than the stale age is not taken over from a live owner on another host."""
    monkeypatch.setattr(runfolder, "CLAIM_HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(runfolder, "_heartbeat", None)  # a fresh thread that reads the short interval
    path = tmp_path / "chunk_00000.claim"
    assert runfolder.try_claim(path) is None
    old = time.time() - 3600
    os.utime(path, (old, old))
    deadline = time.time() + 10
    while path.stat().st_mtime < time.time() - 60 and time.time() < deadline:
        time.sleep(0.02)
    assert path.stat().st_mtime > time.time() - 60, "the heartbeat did not touch the held claim"
    runfolder.release_claim(path)
    assert not path.exists()
    path.write_text("{}")
    os.utime(path, (old, old))
    time.sleep(0.2)  # released claims are not touched any more
    assert path.stat().st_mtime < time.time() - 60


def test_temporary_files_of_dead_processes_are_removed_on_resume(models, reference, tmp_path, live_pid):
    out = _copy(reference, tmp_path)
    host, dead = atomic.host_name(), _dead_pid()
    stale = [out / runfolder.CHUNKS / f".chunk_00001.npz.tmp-{dead}@{host}",
             out / runfolder.UNITS_DIR / f".unit_00000_s0.png.tmp-{dead}@{host}",
             out / f".results.jsonl.tmp-{dead}@{host}"]
    live = out / runfolder.CHUNKS / f".chunk_00000.npz.tmp-{live_pid}@{host}"
    foreign = out / f".index.html.tmp-{dead}@some-other-host"
    for p in (*stale, live, foreign):
        p.write_bytes(b"partial")
    _resume(models, out)
    assert [p.exists() for p in stale] == [False] * 3
    assert live.exists() and foreign.exists()  # a live writer, and one this host cannot ask
    old = time.time() - 2 * atomic.FOREIGN_STALE_SECONDS
    os.utime(foreign, (old, old))
    _resume(models, out)
    assert not foreign.exists()


def test_a_folder_renamed_aside_by_a_dead_process_is_restored(tmp_path):
    target = tmp_path / "model"
    aside = tmp_path / f".model.old-{_dead_pid()}@{atomic.host_name()}"
    aside.mkdir()
    (aside / "weights").write_text("kept")
    atomic.clean_stale(tmp_path)
    assert (target / "weights").read_text() == "kept" and not aside.exists()


def test_replace_dir_swaps_whole_folders(tmp_path):
    old, new = tmp_path / "m", tmp_path / "new"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    atomic.replace_dir(new, old)
    assert faults.files_of(old) == {"b": b"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.slow  # two sweeps of 8 runs as processes: about a minute on a 2-core CPU
def test_two_identical_sweeps_on_one_folder_split_the_work(models, tmp_path):
    config = sw.SweepConfig("fc8", tuple(range(8)), "pixel", steps=2, chunk_size=2)
    ref = tmp_path / "ref"
    sw.sweep(*models, config, ref, progress=False)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "jaxviz", "sweep", "--layer", "fc8", "--units", "0-7", "--method", "pixel",
           "--steps", "2", "--chunk-size", "2", "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(cmd, env=faults.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    computed = [int(o[0].split(" of ")[0]) for o in outputs]
    assert sum(computed) <= 8 + 2, computed  # at most one chunk raced; never all of it twice
    _same(sw.load_chunks(out), sw.load_chunks(ref))
    if not (out / "index.html").exists():  # both finished while the other still computed: a rerun finalizes
        assert sw.sweep(*models, config, out, progress=False).computed == 0
    assert (out / "index.html").exists() and faults.leftovers(out) == []
    assert list((out / runfolder.CHUNKS).glob("*.claim")) == []


# ----- one inverse set's folder ------------------------------------------------------------------------------

def _result(n: int, value: float = 12.0) -> InverseSetResult:
    rng = np.random.default_rng(n)
    return InverseSetResult(
        codes=rng.random((n, 4), np.float32), images=rng.random((n, 8, 8, 1), np.float32) * 40 - 20,
        activations=np.full((n, 1), value, np.float32), encodings=rng.random((n, 4), np.float32),
        rounds=np.zeros(n, np.int32), names=("fc8[3]",), z1=np.array([10.0]), z2=np.array([15.0]),
        status="ok" if n else "unreachable", message="done" if n else "range not reached", sampling_rounds=1,
        outer_iterations=1, seed_gradient_steps=2, lam=np.zeros((2, 2)), mu=10.0,
        best_activations=np.array([value]), diversity={})


def test_an_inverse_set_never_mixes_two_runs(tmp_path):
    out = tmp_path / "set"
    job_a, job_b = {"seed": 0}, {"seed": 1}
    inverse_sets.save_results(_result(5), out, job=job_a)
    first = faults.files_of(out)
    assert {"inverse_set.png", "summary.json", "samples.npz", "manifest.json"} == set(first)
    with pytest.raises(runfolder.SweepError, match="already holds the results of another inverse set.*--force"):
        inverse_sets.save_results(_result(3), out, job=job_b)
    assert faults.files_of(out) == first
    inverse_sets.save_results(_result(4), out, job=job_a)  # the same job again: replaced whole
    assert json.loads((out / "summary.json").read_text())["samples"] == 4
    inverse_sets.save_results(_result(0), out, job=job_b, force=True)  # no samples: no PNG left behind
    assert sorted(faults.files_of(out)) == ["manifest.json", "samples.npz", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["samples"] == 0
    assert faults.leftovers(tmp_path) == []


def test_an_inverse_set_into_a_users_folder_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text("mine")
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(runfolder.SweepError, match=r"already holds other files \(thesis.tex\)"):
        inverse_sets.save_results(_result(2), out, job={"seed": 0})
    assert (out / "summary.json").read_text() == "mine"
    inverse_sets.save_results(_result(2), tmp_path / "set", job={"seed": 0})
    (tmp_path / "set" / "notes.txt").write_text("mine")  # the same job again, but the folder holds more now
    with pytest.raises(runfolder.SweepError, match=r"other files \(notes.txt\)"):
        inverse_sets.save_results(_result(2), tmp_path / "set", job={"seed": 0})


# ----- the gallery ----------------------------------------------------------------------------------------

def test_a_label_with_a_comment_and_script_tag_does_not_blank_the_page(tmp_path):
    images.save_png(np.zeros((8, 8), np.uint8), tmp_path / "u.png")
    rows = [{"unit": u, "seed": 0, "label": label, "final_activation": 1.0, "best_activation": 1.0, "rank": 0,
             "seconds": 0.1, "failed_step": -1, "image": "u.png"}
            for u, label in enumerate(["<!--<script>", "</script><script>alert(1)</script>", "a & b > c"])]
    page = gallery.write_gallery(tmp_path / "index.html", "t", [gallery.Section("units", rows)])
    text = page.read_text()
    data = text.split("var SECTIONS = ", 1)[1].split(";</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)[0]["tiles"][0]["label"] == "<!--<script>"
    assert text.count("<script>") == 2 and text.count("</script>") == 2
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        from tests.test_gallery import run_page

        dom = run_page(page, "--dump-dom")
        assert dom.stdout.count('class="tile') == 3 and 'data-ready="1"' in dom.stdout


def test_a_manifest_being_written_by_another_process_is_waited_for(tmp_path):
    """Two processes started together on a new folder: the second waits for the first's manifest."""
    import threading

    out = tmp_path / "job"
    out.mkdir()
    manifest = {"format": "x/1", "layer": "fc8"}
    tmp = out / f".{runfolder.MANIFEST}.tmp-{os.getpid()}@{atomic.host_name()}"
    tmp.write_text(json.dumps(manifest))

    def finish_writing():
        time.sleep(0.3)
        os.rename(tmp, out / runfolder.MANIFEST)
    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        assert runfolder.open_job_folder(out, manifest, "sweep") == manifest  # resumed, not refused
    finally:
        writer.join()
