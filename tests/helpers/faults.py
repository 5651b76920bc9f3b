"""Faults for the reliability and fuzz tests: tiny Caffe files, damaged bytes, an unprivileged process.

Everything here is small and fast: a 35-pixel CaffeNet and a 4-pixel generator as real ``.caffemodel``
files, bit flips and truncations of any file, and a way to run a command that obeys file permissions
when the tests run as root (``setpriv`` dropping the capabilities that bypass them).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

from jaxviz.models.caffenet import CaffeNetConfig, ConvSpec
from jaxviz.models.generator import DeconvSpec, GeneratorConfig
from tests.helpers.caffe_nets import caffenet_blobs, caffenet_prototxt, generator_blobs, generator_prototxt
from weights_convert.caffemodel import write_caffemodel
from weights_convert.netspec import NetSpec
from weights_convert.prototxt import parse_prototxt

REPO = pathlib.Path(__file__).resolve().parents[2]

TINY_CAFFENET = CaffeNetConfig(input_size=35, in_channels=3,
                               convs=(ConvSpec(8, 5, 2, 0, 1), ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 1),
                                      ConvSpec(8, 3, 1, 1, 2), ConvSpec(8, 3, 1, 1, 2)),
                               fc=(16, 16, 5))
TINY_GENERATOR = GeneratorConfig(code_size=8, fc=(8, 8, 8), reshape=(2, 2, 2),
                                 deconvs=(DeconvSpec(4, 4, 2, 1),) + (DeconvSpec(4, 3, 1, 1),) * 7
                                 + (DeconvSpec(3, 3, 1, 1),),
                                 output_size=4, crop_size=4)


def with_blobs(arch: NetSpec, blobs: dict[str, tuple[np.ndarray, ...]]) -> NetSpec:
    layers = tuple(dataclasses.replace(l, blobs=blobs.get(l.name, ())) for l in arch.layers)
    return dataclasses.replace(arch, layers=layers)


def caffe_files(folder: pathlib.Path, architecture: str = "caffenet", seed: int = 0,
                edit=None) -> tuple[pathlib.Path, pathlib.Path]:
    """``(prototxt, caffemodel)`` of a tiny random-weight network; ``edit(blobs)`` may change the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    if architecture == "caffenet":
        text, blobs = caffenet_prototxt(TINY_CAFFENET), caffenet_blobs(TINY_CAFFENET, seed)
    else:
        text, blobs = generator_prototxt(TINY_GENERATOR), generator_blobs(TINY_GENERATOR, seed)
    if edit is not None:
        edit(blobs)
    proto = folder / f"{architecture}.prototxt"
    proto.write_text(text)
    model = folder / f"{architecture}.caffemodel"
    write_caffemodel(model, with_blobs(parse_prototxt(text, str(proto)), blobs))
    return proto, model


def flip_bit(path: pathlib.Path, bit: int) -> None:
    """Flip bit number ``bit`` (0 = lowest bit of the first byte) of a file in place."""
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def truncate(path: pathlib.Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def files_of(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (what "nothing lost" compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: pathlib.Path) -> list[str]:
    """Temporary files or folders of jaxviz's writers (``.NAME.tmp-PID@HOST``, ``.old-``) under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def unprivileged(cmd: list[str]) -> list[str] | None:
    """``cmd`` run so that file permissions bind it (as root: without CAP_DAC_OVERRIDE), or None if impossible."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    wrapped = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    probe_dir = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"jaxviz-probe-{os.getpid()}"
    probe_dir.mkdir(exist_ok=True)
    probe_dir.chmod(0o555)
    try:
        probe = subprocess.run([*wrapped, sys.executable, "-c", f"open({str(probe_dir / 'x')!r}, 'w')"],
                               capture_output=True, text=True, timeout=60)
    finally:
        probe_dir.chmod(0o755)
        shutil.rmtree(probe_dir, ignore_errors=True)
    if probe.returncode == 0 or "PermissionError" not in probe.stderr:
        return None
    return [*wrapped, *cmd]


def env() -> dict:
    """The environment for a subprocess that imports this checkout."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**base, "PYTHONPATH": str(REPO)}


def one_line_error(stderr: str, prefix: str) -> str:
    """The single error line of a failed command (asserts: one line, the prefix, no traceback)."""
    lines = [l for l in stderr.splitlines() if l.strip() and ": warning: " not in l and not l.startswith(("W0", "I0"))]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]
