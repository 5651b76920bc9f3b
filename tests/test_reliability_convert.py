"""Reliability of converted models: nothing lost, nothing silent (the converter, checkpoints, load).

Each test reproduces one finding of the adversarial run and checks the fix: the hang on an unwritable
folder, the data losses of the converter, corruption accepted by ``load``, raw tracebacks for damaged
cards and odd prototxts, and non-finite weights converted without a word.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

import jaxviz.models as jm
import weights_convert
from jaxviz.models import checkpoint, shipped
from tests.helpers import faults
from weights_convert import __main__ as wc_main
from weights_convert.convert import convert
from weights_convert.errors import (ConversionError, NonFiniteWeightsError, OutputFolderError,
                                    PrototxtSyntaxError, UnsupportedLayerError)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny CaffeNet and generator files, and one converted CaffeNet folder to copy from."""
    folder = tmp_path_factory.mktemp("caffe")
    c_proto, c_model = faults.caffe_files(folder, "caffenet")
    g_proto, g_model = faults.caffe_files(folder, "generator")
    converted = convert("caffenet", c_model, folder / "converted", c_proto)
    return {"proto": c_proto, "model": c_model, "g_proto": g_proto, "g_model": g_model, "converted": converted}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weights_convert", *args], capture_output=True, text=True,
                          timeout=timeout, env=faults.env())


def _params(folder) -> dict:
    return checkpoint.read_params(folder / checkpoint.PARAMS_DIR)


def _same_params(a: dict, b: dict) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# ----- hang: an existing folder that is not writable ------------------------------------------------------

def test_unwritable_existing_folder_is_one_line_and_exits(files, tmp_path):
    target = tmp_path / "readonly"
    target.mkdir()
    target.chmod(0o555)
    cmd = faults.unprivileged([sys.executable, "-m", "weights_convert", "caffenet", str(files["model"]), str(target),
                               "--prototxt", str(files["proto"])])
    if cmd is None:
        pytest.skip("cannot run a process that obeys file permissions here (root without setpriv)")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=faults.env())
    finally:
        target.chmod(0o755)
    assert done.returncode == 2
    line = faults.one_line_error(done.stderr, "weights_convert: ")
    assert "not writable" in line and str(target.name) in line
    assert list(target.iterdir()) == [] and faults.leftovers(tmp_path) == []


def test_orbax_failing_inside_its_write_does_not_hang(tmp_path):
    """The orbax write itself fails (unwritable parent): the error is raised and the process ends by itself.

    An idle asyncio executor thread may still exist at that moment (it depends on timing); the interpreter
    joins it at exit. What must not happen is the old hang, orbax threads waiting forever for a commit."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    code = ("import numpy as np, pathlib\n"
            "from jaxviz.models import checkpoint\n"
            "try:\n"
            f"    checkpoint.write_params(pathlib.Path({str(parent / 'params')!r}), {{'a': {{'k': np.ones(3, np.float32)}}}})\n"
            "except OSError as e:\n"
            "    print('raised', type(e).__name__)\n")
    cmd = faults.unprivileged([sys.executable, "-c", code])
    if cmd is None:
        parent.chmod(0o755)
        pytest.skip("cannot run a process that obeys file permissions here (root without setpriv)")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=faults.env())
    finally:
        parent.chmod(0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raised PermissionError" in done.stdout


# ----- data loss: what the output folder held ------------------------------------------------------------

def test_a_users_folder_is_refused_and_kept(files, tmp_path):
    mine = tmp_path / "mine"
    (mine / "params").mkdir(parents=True)
    (mine / "params" / "weights.txt").write_text("my notes")
    (mine / "metadata.json").write_text('{"my": "card"}')
    before = faults.files_of(mine)
    with pytest.raises(OutputFolderError, match="not empty.*--force"):
        convert("caffenet", files["model"], mine, files["proto"])
    done = _cli("caffenet", str(files["model"]), str(mine), "--prototxt", str(files["proto"]))
    assert done.returncode == 2 and "--force" in faults.one_line_error(done.stderr, "weights_convert: ")
    assert faults.files_of(mine) == before and faults.leftovers(tmp_path) == []
    # --force replaces it, atomically, with a complete model
    convert("caffenet", files["model"], mine, files["proto"], force=True)
    assert jm.load("caffenet", mine).config == faults.TINY_CAFFENET
    assert not (mine / "params" / "weights.txt").exists() and faults.leftovers(tmp_path) == []


def test_a_model_of_the_other_architecture_is_refused(files, tmp_path):
    gen = convert("generator", files["g_model"], tmp_path / "gen", files["g_proto"])
    before = faults.files_of(gen)
    with pytest.raises(OutputFolderError, match="holds a converted 'generator' model.*--force"):
        convert("caffenet", files["model"], gen, files["proto"])
    assert faults.files_of(gen) == before
    assert jm.load("generator", gen).config == faults.TINY_GENERATOR


def test_reconverting_the_same_architecture_replaces_it(files, tmp_path):
    out = convert("caffenet", files["model"], tmp_path / "m", files["proto"])
    _, other = faults.caffe_files(tmp_path / "other", "caffenet", seed=1)
    assert wc_main.main(["caffenet", str(other), str(out), "--prototxt", str(files["proto"])]) == 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["source"]["file"] == other.name
    assert not _same_params(_params(out), _params(files["converted"]))  # the new weights
    assert faults.leftovers(tmp_path) == []


def test_a_model_folder_with_a_users_files_is_refused(files, tmp_path):
    out = shutil.copytree(files["converted"], tmp_path / "m")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"holds a converted 'caffenet' model and other files \(notes.txt\)"):
        convert("caffenet", files["model"], out, files["proto"])
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(OutputFolderError, match="symbolic link"):
        convert("caffenet", files["model"], tmp_path / "link", files["proto"])


def test_reconverting_onto_a_full_disk_keeps_the_old_model(files, tmp_path, monkeypatch):
    out = tmp_path / "m"
    shutil.copytree(files["converted"], out)
    before = faults.files_of(out)
    real = checkpoint.write_params

    def full(target, params):
        real(target, params)  # most of the new checkpoint is written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    monkeypatch.setattr(checkpoint, "write_params", full)
    _, other = faults.caffe_files(tmp_path / "other", "caffenet", seed=1)
    with pytest.raises(OutputFolderError, match="No space left on device.*left as it was"):
        convert("caffenet", other, out, files["proto"])
    assert faults.files_of(out) == before and faults.leftovers(tmp_path) == []
    monkeypatch.setattr(checkpoint, "write_params", real)
    assert _same_params(jm.load("caffenet", out).params, _params(files["converted"]))


def test_checkpoint_save_keeps_the_old_params_when_the_write_fails(tmp_path, monkeypatch):
    """``checkpoint.save`` (what training writes with) replaces params/ only once the new one is whole."""
    params = {"a": {"k": np.arange(3, dtype=np.float32)}}
    checkpoint.save(tmp_path, params, {"architecture": "x"})
    before = faults.files_of(tmp_path)

    def fail(target, p):
        (target / "partial").mkdir(parents=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    monkeypatch.setattr(checkpoint, "write_params", fail)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, {"a": {"k": np.zeros(3, np.float32)}}, {"architecture": "x"})
    assert faults.files_of(tmp_path) == before and faults.leftovers(tmp_path) == []


# ----- integrity: checksums of every array --------------------------------------------------------------

def test_the_card_records_a_checksum_per_array(files):
    card = json.loads((files["converted"] / "metadata.json").read_text())
    params = _params(files["converted"])
    assert card[checkpoint.CHECKSUMS] == checkpoint.param_checksums(params)
    assert set(card[checkpoint.CHECKSUMS]["conv1"]) == {"kernel", "bias"}


def _silent_flip(folder):
    """A bit of a weight file whose flip orbax reads back without complaint as a changed value."""
    ref = _params(folder)
    data = max((p for p in (folder / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    rng = np.random.default_rng(0)
    for bit in rng.integers(0, data.stat().st_size * 8, 200):
        faults.flip_bit(data, int(bit))
        try:
            changed = not _same_params(_params(folder), ref)
        except checkpoint.CheckpointError:
            changed = False
        if changed:
            return data, int(bit)
        faults.flip_bit(data, int(bit))
    pytest.fail("no bit flip changed a weight silently")


def _strip_file_checksums(folder):
    """The card without its per-file checksums (so the per-array ones are what catches damage)."""
    card = json.loads((folder / "metadata.json").read_text())
    del card[checkpoint.FILE_CHECKSUMS], card[checkpoint.CARD_CHECKSUM]
    (folder / "metadata.json").write_text(json.dumps(card))


def test_a_flipped_weight_bit_is_named_on_load(files, tmp_path):
    folder = shutil.copytree(files["converted"], tmp_path / "m")
    data, _ = _silent_flip(folder)  # before checksums, this loaded as a model with one wrong weight
    with pytest.raises(checkpoint.CheckpointError, match=rf"params/ocdbt.process_0/d/{data.name} is damaged: it "
                                                          rf"does not match its sha256 in .*metadata.json"):
        jm.load("caffenet", folder)
    _strip_file_checksums(folder)  # and each array is checked too, naming it
    with pytest.raises(checkpoint.CheckpointError, match=r"array '\w+/\w+' in .*params does not match its "
                                                          r"checksum in .*metadata.json"):
        jm.load("caffenet", folder)


def test_every_file_of_params_is_checked(files, tmp_path):
    folder = shutil.copytree(files["converted"], tmp_path / "m")
    card = json.loads((folder / "metadata.json").read_text())
    assert sorted(card[checkpoint.FILE_CHECKSUMS]) == sorted(
        str(p.relative_to(folder / "params")) for p in (folder / "params").rglob("*") if p.is_file())
    (folder / "params" / "_CHECKPOINT_METADATA").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="_CHECKPOINT_METADATA is missing"):
        jm.load("caffenet", folder)


def test_the_embedded_models_verify():
    with warnings.catch_warnings():
        warnings.simplefilter("error", checkpoint.UnverifiedCheckpointWarning)
        for architecture in ("caffenet", "generator"):
            assert checkpoint.CHECKSUMS in jm.load(architecture).metadata


def test_an_old_card_without_checksums_loads_with_a_warning(files, tmp_path):
    folder = shutil.copytree(files["converted"], tmp_path / "old")
    card = json.loads((folder / "metadata.json").read_text())
    for key in (checkpoint.CHECKSUMS, checkpoint.CARD_CHECKSUM, checkpoint.FILE_CHECKSUMS):
        del card[key]  # as cards were before checksums
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.warns(checkpoint.UnverifiedCheckpointWarning, match="no parameter checksums.*reconvert"):
        model = jm.load("caffenet", folder)
    assert _same_params(model.params, _params(files["converted"]))


@pytest.mark.parametrize("strip", [False, True], ids=["with-file-checksums", "array-checksums-only"])
@pytest.mark.parametrize("damage, match", [
    (lambda f: (f / "metadata.json").write_text("{not json"), r"metadata.json is damaged \(not JSON"),
    (lambda f: (f / "metadata.json").write_text("[1, 2]"), "metadata.json is damaged"),
    (lambda f: (f / "metadata.json").write_bytes(b"\xff\xfe\x00"), "metadata.json is damaged"),
    (lambda f: (f / "metadata.json").write_text('{"format_version": 1, "architecture": "caffenet"}'),
     "metadata.json is damaged: its 'layers'"),
    (lambda f: (f / "params" / "_METADATA").write_text("{"), r"_METADATA is damaged"),
    (lambda f: (f / "params" / "_METADATA").write_text('{"tree_metadata": 3}'), r"_METADATA is damaged"),
    (lambda f: (f / "params" / "_METADATA").write_text('{"tree_metadata": {"x": 1}}'), r"params(/_METADATA)? is damaged"),
    (lambda f: faults.truncate(f / "params" / "manifest.ocdbt", 10), r"params(/manifest.ocdbt)? is damaged"),
    (lambda f: shutil.rmtree(f / "params"), r"params not found"),
    (lambda f: (f / "metadata.json").unlink(), r"metadata.json not found"),
])
def test_a_damaged_model_folder_is_named(files, tmp_path, damage, match, strip):
    folder = shutil.copytree(files["converted"], tmp_path / "m")
    if strip:
        _strip_file_checksums(folder)
    damage(folder)
    with pytest.raises(checkpoint.CheckpointError, match=match):
        jm.load("caffenet", folder)


def test_an_edited_card_is_named(files, tmp_path):
    folder = shutil.copytree(files["converted"], tmp_path / "m")
    card = json.loads((folder / "metadata.json").read_text())
    card["config"]["lrn_alpha"] = 0.0003  # a flipped digit: a different network, silently, before card_sha256
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(checkpoint.CheckpointError, match="edited after conversion.*delete the card_sha256"):
        jm.load("caffenet", folder)
    del card[checkpoint.CARD_CHECKSUM]  # a deliberate edit, accepted
    (folder / "metadata.json").write_text(json.dumps(card))
    assert jm.load("caffenet", folder).config.lrn_alpha == 0.0003
    card["config"]["fc"] = [16, 16, 7]
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(checkpoint.CheckpointError, match="do not fit the network its config describes"):
        jm.load("caffenet", folder)
    card["config"]["bogus"] = 1
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(checkpoint.CheckpointError, match="config does not describe a caffenet"):
        jm.load("caffenet", folder)


def test_a_missing_or_wrong_folder_is_named(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        jm.load("caffenet", tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a model folder"):
        jm.load("caffenet", tmp_path / "file")


def test_an_unreadable_params_folder_is_not_called_missing(files, tmp_path):
    folder = shutil.copytree(files["converted"], tmp_path / "m")
    code = ("import jaxviz.models as jm\n"
            "from jaxviz.models.checkpoint import CheckpointError\n"
            f"try:\n    jm.load('caffenet', {str(folder)!r})\nexcept CheckpointError as e:\n    print('ERR', e)\n")
    cmd = faults.unprivileged([sys.executable, "-c", code])
    if cmd is None:
        pytest.skip("cannot run a process that obeys file permissions here (root without setpriv)")
    (folder / "params").chmod(0)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=faults.env())
    finally:
        (folder / "params").chmod(0o755)
    assert "ERR cannot read" in done.stdout and "permission denied" in done.stdout, done.stdout + done.stderr[-2000:]


# ----- non-finite weights ------------------------------------------------------------------------------------

def test_nonfinite_weights_are_refused_naming_layer_and_blob(tmp_path):
    def poison(blobs):
        blobs["fc7"][1][3] = np.nan
        blobs["fc7"][1][4] = np.inf
    proto, model = faults.caffe_files(tmp_path, "caffenet", edit=poison)
    with pytest.raises(NonFiniteWeightsError, match=r"2 of 16 weights are not finite \(1 NaN, 1 Inf\).*"
                                                    r"--allow-nonfinite.*layer 'fc7', blob 1"):
        convert("caffenet", model, tmp_path / "m", proto)
    assert not (tmp_path / "m").exists()
    with pytest.warns(UserWarning, match="non-finite weights used as they are.*fc7/1: 2"):
        out = convert("caffenet", model, tmp_path / "m", proto, allow_nonfinite=True)
    assert json.loads((out / "metadata.json").read_text())["nonfinite_weights"] == {"fc7/1": 2}


def test_load_caffe_refuses_nonfinite_weights_naming_layer_and_blob(tmp_path):
    def poison(blobs):
        blobs["conv1"][0][0, 0, 0, 0] = np.nan
    proto, model = faults.caffe_files(tmp_path, "caffenet", edit=poison)
    with pytest.raises(NonFiniteWeightsError, match=r"1 of .* weights are not finite \(1 NaN, 0 Inf\).*"
                                                    r"allow_nonfinite=True.*layer 'conv1', blob 0"):
        weights_convert.load_caffe(proto, model)
    with pytest.warns(UserWarning, match="non-finite weights used as they are.*conv1/0: 1"):
        loaded = weights_convert.load_caffe(proto, model, allow_nonfinite=True)
    assert sum(int(np.isnan(np.asarray(leaf)).sum()) for leaf in jax.tree_util.tree_leaves(loaded.params)) == 1


# ----- prototxt edits: located errors, no traceback, no 10 MB message --------------------------------------

def _edited(files, tmp_path, old: str, new: str, count: int = 1):
    text = files["proto"].read_text()
    assert old in text
    path = tmp_path / "edited.prototxt"
    path.write_text(text.replace(old, new, count))
    return path


@pytest.mark.parametrize("old, new, error, match", [
    ("stride: 2", "stride: 0", UnsupportedLayerError, r"convolution_param.stride is 0.*layer 'conv1'"),
    ("stride: 2\n  }\n}\nlayer {\n  name: \"norm1\"", "stride: 0\n  }\n}\nlayer {\n  name: \"norm1\"",
     UnsupportedLayerError, r"pooling_param.stride is 0.*layer 'pool1'"),
    ("num_output: 8", "num_output: " + "9" * 5000, PrototxtSyntaxError, r"the number '9+'\.\.\. \(5000 characters\) is too long"),
    ("num_output: 8", "num_output: " + "9" * 30, UnsupportedLayerError, "num_output is 9+; it must be between"),
    ("group: 2", "group: 0", UnsupportedLayerError, r"group is 0.*layer 'conv2'"),
    ("pad: 1", "pad: 1\n    dilation: 0", UnsupportedLayerError, "dilation is 0"),
    ("pad: 1", "pad: 1\n    dilation: 2", ConversionError, r"dilation \(2, 2\) is not supported"),
    ("local_size: 5", "local_size: 0", ConversionError, "local_size 0 must be odd"),
    ("inner_product_param {\n    num_output: 16", "inner_product_param {\n    bias_term: true", ConversionError,
     "num_output must be an integer"),
])
def test_prototxt_edits_are_located_errors(files, tmp_path, old, new, error, match):
    proto = _edited(files, tmp_path, old, new)
    with pytest.raises(error, match=match):
        convert("caffenet", files["model"], tmp_path / "m", proto)
    with pytest.raises(ConversionError):
        weights_convert.load_caffe(proto, files["model"])
    assert not (tmp_path / "m").exists() and faults.leftovers(tmp_path) == []


def test_a_10_mb_token_is_not_echoed(files, tmp_path):
    proto = tmp_path / "token.prototxt"
    proto.write_text("A" * 10_000_000)
    with pytest.raises(PrototxtSyntaxError) as err:
        convert("caffenet", files["model"], tmp_path / "m", proto)
    assert len(str(err.value)) < 1000
    with pytest.raises(PrototxtSyntaxError) as err:
        weights_convert.load_caffe(proto)
    assert len(str(err.value)) < 1000


# ----- the command line: one line, exit 2 ----------------------------------------------------------------

def test_weights_convert_errors_are_one_line(files, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cases = [
        ["caffenet", str(tmp_path / "missing.caffemodel"), str(tmp_path / "o1")],
        ["caffenet", str(tmp_path), str(tmp_path / "o2")],                       # a folder as the caffemodel
        ["caffenet", str(files["model"]), str(tmp_path / "afile")],               # output is a file
        ["caffenet", str(files["model"]), str(tmp_path / "afile" / "under")],     # output under a file
        ["caffenet", str(files["model"]), str(tmp_path / "o3"), "--prototxt", str(tmp_path / "none.prototxt")],
        ["generator", str(files["model"]), str(tmp_path / "o4")],                 # weights of another network
        ["alexnet", str(files["model"]), str(tmp_path / "o5")],                   # a bad argument
    ]
    for args in cases:
        with pytest.raises(SystemExit) if args[0] == "alexnet" else _nothing():
            assert wc_main.main(args) == 2
        err = capsys.readouterr().err
        line = faults.one_line_error(err, "weights_convert: ")
        assert len(line) < 800, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_long_messages_are_cut(files, tmp_path, capsys):
    bad = tmp_path / ("x" * 200 + ".caffemodel")
    bad.write_bytes(b"\x0a" + b"\xff" * 10)
    assert wc_main.main(["caffenet", str(bad), str(tmp_path / "o")]) == 2
    assert re.search(r"weights_convert: .{20,800}$", capsys.readouterr().err.strip())


@pytest.mark.parametrize("architecture", sorted(shipped.EMBEDDED_FOLDERS))
def test_every_shipped_model_records_and_passes_all_three_checksums(architecture):
    """The packaged models are verified like converted ones: per array, per file of params/, and the card."""
    folder = shipped.embedded_dir(architecture)
    card = checkpoint.read_metadata(folder)  # checks card_sha256
    assert {checkpoint.CHECKSUMS, checkpoint.FILE_CHECKSUMS, checkpoint.CARD_CHECKSUM} <= set(card)
    assert card[checkpoint.FILE_CHECKSUMS] == checkpoint.file_checksums(folder / checkpoint.PARAMS_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unverified checkpoint warns: none of the shipped ones may
        params, _ = checkpoint.restore(folder)
    assert params
