"""``make demo``, first form: invert held-out digits through the embedded generator, G(E(x)), and show them.

Writes ``reconstructions.png`` (each original beside its reconstruction, with the classifier's labels) and
``summary.json`` into the output folder, and prints the folder.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import embedded, render
from jaxviz.models import crop_to_classifier, load

PAIRS_PER_ROW = 10


def make_inversion(clf: Any, gen: Any):
    """A jitted ``invert(c_params, g_params, x) -> (crop(G(E(x))), labels of x, labels of G(E(x)))``."""

    @jax.jit
    def invert(c_params, g_params, x):
        acts = clf.apply(c_params, x, ("fc6", "fc8"))
        image = crop_to_classifier(gen.apply(g_params, acts["fc6"], ("deconv0",))["deconv0"], gen.config)
        rec_logits = clf.apply(c_params, image, ("fc8",))["fc8"]
        return image, jnp.argmax(acts["fc8"], -1), jnp.argmax(rec_logits, -1)

    return invert


def reconstruction_sheet(originals: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray,
                         pred_x: np.ndarray, pred_rec: np.ndarray, preprocessing: dict, title: str):
    """Contact sheet of (original, G(E(x))) pairs captioned with the classifier's labels; red = wrong label."""
    orig = render.to_display(originals, preprocessing)
    rec = render.to_display(reconstructions, preprocessing)
    rows, caps, colors = [], [], []
    for start in range(0, len(labels), PAIRS_PER_ROW):
        row, cap, col = [], [], []
        for i in range(start, min(start + PAIRS_PER_ROW, len(labels))):
            row += [orig[i], rec[i]]
            cap += [f"x: {pred_x[i]}", f"G: {pred_rec[i]}"]
            col += ["black" if pred_x[i] == labels[i] else "red",
                    "black" if pred_rec[i] == labels[i] else "red"]
        rows.append(row), caps.append(cap), colors.append(col)
    return render.contact_sheet(rows, caps, caption_colors=colors, scale=2, group=2, group_gap=10, title=title)


def run_demo(out_dir: str | pathlib.Path = "out/demo") -> pathlib.Path:
    """G(E(x)) of the shipped held-out digits into reconstructions.png and summary.json; returns the folder."""
    out = pathlib.Path(out_dir)
    clf, gen = load("caffenet"), load("generator")
    images, labels = embedded.heldout_digits()
    pre = clf.metadata["preprocessing"]
    x = embedded.pixels_to_network(images, pre)
    rec, pred_x, pred_rec = jax.device_get(make_inversion(clf, gen)(clf.params, gen.params, jnp.asarray(x)))
    agreement = float(np.mean(pred_rec == labels))
    title = (f"{len(labels)} held-out MNIST digits x (left of each pair) and their inversions G(E(x)) (right); "
             f"captions: the classifier's label, red where it is not the true label. "
             f"G(E(x)) keeps the label: {np.sum(pred_rec == labels)}/{len(labels)}")
    sheet = reconstruction_sheet(x, rec, labels, pred_x, pred_rec, pre, title)
    render.save_png(sheet, out / "reconstructions.png")
    summary = {"digits": int(len(labels)), "classifier_accuracy": float(np.mean(pred_x == labels)),
               "label_agreement": agreement,
               "agreement_with_classifier_label": float(np.mean(pred_rec == pred_x)),
               "image_mse": float(np.mean(np.square(rec - x))),
               "labels": labels.tolist(), "classifier_labels": pred_x.tolist(),
               "reconstruction_labels": pred_rec.tolist(),
               "models": "embedded default pair (jaxviz/data/embedded, see TRAINING.md there)"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxviz demo [--out DIR]``: run the demo and print where its results are."""
    parser = argparse.ArgumentParser(prog="jaxviz demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/demo", help="folder for the results (default: out/demo)")
    args = parser.parse_args(argv)
    out = run_demo(args.out)
    summary = json.loads((out / "summary.json").read_text())
    print(f"generator inversion G(E(x)) of {summary['digits']} held-out digits: classifier accuracy on x "
          f"{summary['classifier_accuracy']:.2f}, label kept by G(E(x)) {summary['label_agreement']:.2f}")
    print(f"results written to {out}/ (reconstructions.png, summary.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
