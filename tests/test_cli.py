"""The ``jaxviz visualize`` verb: one unit's image as a PNG, clear messages for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from jaxviz import cli


@pytest.mark.slow
def test_visualize_writes_a_png(tmp_path, capsys):
    out = tmp_path / "unit3.png"
    assert cli.main(["visualize", "--unit", "3", "--steps", "6", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (28 * 8, 28 * 8)  # small images are magnified for viewing
    assert "fc8 unit 3: activation" in capsys.readouterr().out


def test_visualize_says_where_dgn_am_departs_from_the_paper(tmp_path, capsys):
    assert cli.main(["visualize", "--layer", "fc6", "--unit", "5", "--steps", "2",
                     "--out", str(tmp_path / "fc6.png")]) == 0
    assert "dgn_am on fc6: bound_scale 4, lr_start 4, decay 0" in capsys.readouterr().out
    assert cli.main(["visualize", "--unit", "5", "--steps", "2", "--out", str(tmp_path / "fc8.png")]) == 0
    assert "dgn_am on fc8" not in capsys.readouterr().out


def test_visualize_names_bad_units_and_layers(capsys):
    assert cli.main(["visualize", "--unit", "12", "--steps", "2"]) == 2
    assert "unit 12 is out of range for layer 'fc8'" in capsys.readouterr().err
    assert cli.main(["visualize", "--layer", "fc9", "--unit", "1", "--steps", "2"]) == 2
    assert "unknown tap 'fc9'" in capsys.readouterr().err


@pytest.mark.slow
def test_visualize_lucid_method(tmp_path):
    out = tmp_path / "lucid.png"
    assert cli.main(["visualize", "--unit", "1", "--method", "lucid", "--steps", "4", "--out", str(out)]) in (0, 1)
    assert Image.open(out).size == (28 * 8, 28 * 8)


@pytest.mark.slow  # two fresh processes compiling on a CPU: about a minute
def test_a_rerun_in_a_new_process_reads_the_compiled_programs(tmp_path):
    """The CLI fills its persistent compilation cache once; the same command again compiles nothing new."""
    cache = tmp_path / "cache"
    env = {**os.environ, "JAXVIZ_COMPILATION_CACHE": str(cache)}
    command = [sys.executable, "-m", "jaxviz", "visualize", "--layer", "fc8", "--unit", "3", "--method", "pixel",
               "--steps", "3"]

    def run(name: str) -> set[str]:
        done = subprocess.run(command + ["--out", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stderr
        return {p.name for p in cache.rglob("*") if p.is_file()}

    first = run("a.png")
    assert first, "the first run cached no program"
    assert run("b.png") == first, "the rerun compiled programs the first run had cached"


def test_the_compilation_cache_can_be_turned_off(tmp_path, monkeypatch):
    from jaxviz.workflows import compile_cache

    monkeypatch.setenv(compile_cache.CACHE_ENV, "off")
    assert compile_cache.default_cache_dir() is None
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "c"))
    assert compile_cache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(compile_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_cache_dir() == tmp_path / "xdg" / "jaxviz" / "xla"
