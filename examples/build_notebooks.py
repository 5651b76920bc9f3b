"""Writes the example notebooks from the cells below (run it after editing them; the suite executes them).

    .venv/bin/python examples/build_notebooks.py
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent


class Markdown(NamedTuple):
    """A text cell."""

    text: str


def md(text: str) -> Markdown:
    """A markdown cell (code cells are plain strings)."""
    return Markdown(text)


SETUP = """import jax
import numpy as np
import jaxviz
from jaxviz import objectives as O, recipes

classifier, generator = jaxviz.load("caffenet"), jaxviz.load("generator")   # the embedded MNIST pair"""

NOTEBOOKS = {
    "01_one_unit.ipynb": [
        md("# One unit\n\nWhat does fc8 unit 3 (the class \"3\") of the embedded classifier want to see? Three "
        "methods, each result shown with its caption (unit, activation, rank in its layer) and its report: "
        "the percentile among real digits, the label an independent classifier gives the picture, the path "
        "check and the flags."),
        SETUP,
        md("## DGN-AM: optimize the generator's code (Nguyen et al. 2016)"),
        """dgn = recipes.dgn_am(generator)
result = dgn.visualize(classifier, O.unit("fc8", 3), key=jax.random.key(0))
print(result.report.line())
result""",
        md("## Pixel space under Yosinski et al.'s priors"),
        """pixel = recipes.pixel_am(classifier.input_shape, mean=classifier.preprocessing["mean"][0], steps=100)
result = pixel.visualize(classifier, O.unit("fc8", 3), key=jax.random.key(0))
print(result.report.line())
result""",
        md("## Lucid's default: a Fourier image, Adam, robustness transforms"),
        """lucid = recipes.lucid(classifier.input_shape, classifier.preprocessing, steps=128)
result = lucid.visualize(classifier, O.unit("fc8", 3), key=jax.random.key(0))
print(result.report.line())
result""",
        md("Objectives compose and parse from text; a PNG knows its model's display space:"),
        """objective = O.parse("fc8:3") - 1e-6 * jaxviz.penalties.l2()
result = pixel.visualize(classifier, objective, key=jax.random.key(1))
path = result.save_png("one_unit.png", scale=8)
print(path.name, result.report.rank)""",
    ],
    "02_whole_layer.ipynb": [
        md("# A whole layer\n\nThe unit index is traced, so one compiled program serves every unit of a layer "
        "(`vmap` over runs). A sweep does the same over any number of units in resumable chunks and writes "
        "a gallery."),
        SETUP,
        """targets, keys = jaxviz.unit_keys(seed=0, units=range(10))
batch = recipes.dgn_am(generator, steps=100).visualize_batch(classifier, O.unit("fc8"), keys=keys, targets=targets)
print(sum(r.rank == 0 for r in batch.report), "of 10 classes on top;",
      sum(r.judge_label == str(r.unit) for r in batch.report), "read as their class by the judge")
batch.show(columns=5)""",
        md("## A hidden layer, swept into a folder"),
        """import json, pathlib, tempfile
out = pathlib.Path(tempfile.mkdtemp()) / "fc6"
config = jaxviz.SweepConfig("fc6", tuple(range(16)), "pixel", steps=60)
summary = jaxviz.sweep(classifier, generator, config, out, progress=False)
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
print(len(rows), "runs;", sum(r["rank"] == 0 for r in rows), "on top of their layer; index.html:",
      (out / "index.html").exists())""",
        """from IPython.display import Image
Image(filename=str(sorted(out.glob("contact_sheet_*.png"))[0]))""",
    ],
    "03_dgn_am.ipynb": [
        md("# DGN-AM in detail\n\nThe generator G maps an fc6 code to an image; DGN-AM optimizes the code "
        "within per-unit bounds. First, how well G inverts the classifier's own codes: G(E(x)) for real "
        "digits."),
        SETUP,
        """from jaxviz.io import images
from jaxviz.models import preprocessing as pp, shipped
digits, labels = shipped.heldout_digits()
x = pp.to_network(digits[:10], classifier.preprocessing)
rebuilt = recipes.generator_inversion(classifier, generator, x)
images.contact_sheet([list(pp.to_display(x, classifier.preprocessing)),
                      list(pp.to_display(np.asarray(rebuilt), classifier.preprocessing))], scale=3)""",
        md("The code bounds, and a hidden unit through its pre-activation versus its selectivity:"),
        """bounds = jaxviz.models.code_bounds(generator)
print("code units:", bounds.size, "bounded at 0:", int((bounds == 0).sum()))
from jaxviz.recipes import registry
dgn = recipes.dgn_am(generator, steps=100)
for kind in ("auto", "log_softmax"):
    objective = registry.unit_objective(classifier, "fc6", registry.OBJECTIVE_NAMES[kind])
    result = dgn.visualize(classifier, objective, key=jax.random.key(0), target=np.int32(12))
    print(kind, "->", result.report.line().splitlines()[0])""",
        md("## The PPGN-style sampler: many images of one class"),
        """sampler = recipes.ppgn_sampler(generator, class_layer="fc8", steps=60)
targets, keys = jaxviz.unit_keys(seed=0, units=[7], seeds_per_unit=4)
samples = sampler.visualize_batch(classifier, sampler.objective, keys=keys, targets=targets)
samples.show()""",
    ],
    "04_inverse_sets.ipynb": [
        md("# Inverse sets\n\nNot one maximizing image but many diverse inputs whose activation lies in a range "
        "(Hada & Carreira-Perpinan 2019)."),
        SETUP,
        """from jaxviz import inverse_set as inv
from jaxviz.io import images
from jaxviz.models import preprocessing as pp
result = inv.sample_inverse_set(classifier, generator, [inv.Constraint("fc8", 3, 10.0, 15.0)],
                                jax.random.key(0), inv.InverseSetConfig(n=60, k=10))
print(result.message)
print("activations in range:", bool(np.all((result.activations >= 10) & (result.activations <= 15))))
pictures = pp.to_display(result.images[:30], classifier.preprocessing)
images.contact_sheet([list(pictures[i:i + 10]) for i in range(0, 30, 10)], scale=3)""",
    ],
    "05_your_own_model.ipynb": [
        md("# Your own network\n\nAny Flax (linen or NNX) or Equinox module, or a plain function, becomes a "
        "`Model` with taps named by module path; everything else works on it unchanged."),
        """import flax.linen as nn
import jax
import optax
import jaxviz
from jaxviz import objectives as O, recipes
from jaxviz.models import preprocessing, shipped

class SmallNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (5, 5), strides=2, name="conv")(x))
        self.sow("intermediates", "conv_relu", h)
        h = nn.relu(nn.Dense(64, name="hidden")(h.reshape(len(h), -1)))
        return nn.Dense(10, name="logits")(h)""",
        """card = jaxviz.load("caffenet").preprocessing      # the embedded pair's input space
digits, labels = shipped.heldout_digits()
x = preprocessing.to_network(digits, card)
net, opt = SmallNet(), optax.adam(1e-3)
params = net.init(jax.random.key(0), x[:1])["params"]
state = opt.init(params)

@jax.jit
def train_step(params, state):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), labels).mean()
    updates, state = opt.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

for _ in range(150):
    params, state = train_step(params, state)
mine = jaxviz.from_flax(net, params, (28, 28, 1), preprocessing=card, class_layer="logits")
mine.tap_names""",
        """pixel = recipes.pixel_am(mine.input_shape, mean=card["mean"][0], steps=100)
targets, keys = jaxviz.unit_keys(seed=0, units=range(10))
batch = pixel.visualize_batch(mine, O.unit("logits"), keys=keys, targets=targets)
batch.show(columns=5)""",
        md("A tap the network does not have is named, with the ones it has:"),
        """try:
    mine(x[:1], ("fc8",))
except KeyError as err:
    print(err)""",
    ],
}


def notebook(cells: list) -> nbformat.NotebookNode:
    """A notebook of markdown (``md(...)``) and code cells (plain strings), without outputs."""
    nb = new_notebook()
    nb.cells = [new_markdown_cell(c.text) if isinstance(c, Markdown) else new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), HERE / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
