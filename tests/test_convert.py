"""weights_convert end to end: the CLI writes a loadable model folder; bad input gives located errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import jaxviz.models as jm
from jaxviz.models.caffenet import CaffeNetConfig, ConvSpec
from tests.helpers.caffe_nets import caffenet_blobs, caffenet_prototxt
from tests.test_opencv_parity import with_blobs
from weights_convert.caffemodel import write_caffemodel
from weights_convert.convert import convert
from weights_convert.errors import ConversionError, CorruptModelError, ModelMismatchError
from weights_convert.prototxt import parse_prototxt

TINY = CaffeNetConfig(input_size=35, in_channels=3,
                      convs=(ConvSpec(8, 5, 2, 0, 1), ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 1),
                             ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 2)),
                      fc=(16, 16, 5))


@pytest.fixture
def tiny_files(tmp_path):
    """A tiny CaffeNet-topology prototxt and a matching random-weight caffemodel."""
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(caffenet_prototxt(TINY))
    arch = parse_prototxt(proto.read_text(), str(proto))
    model = tmp_path / "tiny.caffemodel"
    write_caffemodel(model, with_blobs(arch, caffenet_blobs(TINY)))
    return proto, model, arch


def test_cli_writes_a_folder_that_load_reads(tiny_files, tmp_path):
    proto, model, _ = tiny_files
    out = tmp_path / "converted"
    done = subprocess.run([sys.executable, "-m", "weights_convert", "caffenet", str(model), str(out),
                           "--prototxt", str(proto)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "metadata.json").read_text())
    assert card["architecture"] == "caffenet"
    assert card["source"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert card["layers"]["fc6"]["kernel"] == [2 * 2 * 8, 16]
    net = jm.load("caffenet", out)
    assert net.config == TINY
    probs = net(np.zeros((1, 35, 35, 3), np.float32), taps=("prob",))["prob"]
    np.testing.assert_allclose(np.asarray(probs).sum(), 1.0, rtol=1e-5)


def test_cli_reports_bad_input_with_exit_status_2(tmp_path):
    bad = tmp_path / "broken.caffemodel"
    bad.write_bytes(b"\x0a\x05LeN")  # a name field cut short
    done = subprocess.run([sys.executable, "-m", "weights_convert", "caffenet", str(bad), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2  # one line "weights_convert: problem (place)", as every verb of jaxviz
    assert done.stderr.startswith("weights_convert: ") and done.stderr.count("\n") == 1
    assert "broken.caffemodel" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists() and [p.name for p in tmp_path.iterdir()] == ["broken.caffemodel"]


def test_truncated_caffemodel_names_the_file(tiny_files, tmp_path):
    _, model, _ = tiny_files
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(CorruptModelError, match="cut.caffemodel"):
        convert("caffenet", cut, tmp_path / "o")


def test_prototxt_that_does_not_match_the_weights(tiny_files, tmp_path):
    _, model, _ = tiny_files
    wider = dataclasses.replace(TINY, convs=(ConvSpec(16, 5, 2, 0, 1),) + TINY.convs[1:])
    other = tmp_path / "wider.prototxt"
    other.write_text(caffenet_prototxt(wider))
    with pytest.raises(ModelMismatchError) as err:
        convert("caffenet", model, tmp_path / "o", other)
    message = str(err.value)
    assert "tiny.caffemodel" in message and "conv1" in message and "blob 0" in message


def test_missing_blob_is_named(tiny_files, tmp_path):
    _, _, arch = tiny_files
    blobs = caffenet_blobs(TINY)
    del blobs["fc7"]
    model = tmp_path / "no-fc7.caffemodel"
    write_caffemodel(model, with_blobs(arch, blobs))
    with pytest.raises(ModelMismatchError, match="fc7"):
        convert("caffenet", model, tmp_path / "o", None)


def test_generator_weights_are_not_a_caffenet(tiny_files, tmp_path):
    _, model, _ = tiny_files
    with pytest.raises(ConversionError, match="tiny.caffemodel"):
        convert("generator", model, tmp_path / "o")


def test_load_refuses_a_folder_of_another_architecture(tiny_files, tmp_path):
    proto, model, _ = tiny_files
    convert("caffenet", model, tmp_path / "c", proto)
    with pytest.raises(Exception, match="'caffenet' model, not 'generator'"):
        jm.load("generator", tmp_path / "c")
