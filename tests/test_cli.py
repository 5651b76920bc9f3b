"""The ``jaxviz visualize`` verb: one unit's image as a PNG, clear messages for bad input."""

from __future__ import annotations

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
