"""Train and ship the embedded default pair: a small CaffeNet on MNIST and an fc6 generator inverting it.

    python -m jaxviz.training.embedded_pair --data ../shared/data/mnist-t10k --out jaxviz/data/embedded

Writes ``classifier/`` and ``generator/`` (jaxviz checkpoint folders, loadable with
``jaxviz.models.load``), ``fc6_bounds.npy`` (DGN-AM code bounds), ``heldout_digits.npz`` (demo inputs)
and ``TRAINING.md`` (how, on what, seed, time, figures); prints the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxviz.models import checkpoint
from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig
from jaxviz.models.generator import Generator, GeneratorConfig
from jaxviz.training import classifier as cls_train
from jaxviz.training import generator as gen_train
from jaxviz.training import mnist
from jaxviz.training.common import batched, param_count

BOUNDS_FILE = "fc6_bounds.npy"
DIGITS_FILE = "heldout_digits.npz"
NOTE_FILE = "TRAINING.md"
BOUND_SIGMAS = 3.0
MNIST_SOURCE = ("MNIST test set (t10k, 10000 images; Y. LeCun, C. Cortes, C. J. C. Burges; "
                "usually cited as CC BY-SA 3.0), original IDX gzip files")


def code_bounds(codes: np.ndarray, sigmas: float = BOUND_SIGMAS) -> np.ndarray:
    """DGN-AM's per-unit upper bounds of the code: ``sigmas`` standard deviations of fc6 over real images."""
    return (sigmas * codes.std(axis=0)).astype(np.float32)


def fc6_codes(clf: CaffeNet, c_params: Any, x: np.ndarray) -> np.ndarray:
    """The classifier's fc6 (after ReLU, dropout off) for network-space ``x``."""
    fn = jax.jit(lambda p, xs: clf.apply({"params": p}, xs, taps=("fc6",))["fc6"])
    return batched(fn, c_params, x)


def label_agreement(clf: CaffeNet, c_params: Any, reconstructions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of reconstructions G(E(x)) the classifier gives ``labels`` (those of the x)."""
    return float(np.mean(batched(cls_train.make_predict(clf), c_params, reconstructions) == labels))


def _machine() -> str:
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (defaults are the shipped run)."""
    p = argparse.ArgumentParser(prog="python -m jaxviz.training.embedded_pair",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True,
                   help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    p.add_argument("--out", default="out/embedded_pair",
                   help="a new or empty output folder (default: out/embedded_pair); copy the result into "
                        "jaxviz/data/embedded to ship it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=8000, help="first N examples train, the rest are held out")
    p.add_argument("--classifier-steps", type=int, default=cls_train.ClassifierTrainConfig().steps)
    p.add_argument("--generator-steps", type=int, default=gen_train.GeneratorTrainConfig().steps)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--demo-digits", type=int, default=100, help="held-out digits shipped for the demo")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train both networks, evaluate them on the held-out part, write everything into ``args.out``."""
    out = pathlib.Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"embedded_pair: {out} is not empty; give a new folder with --out (nothing is "
                         f"overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    train, held = mnist.split(mnist.load_idx(args.data), args.n_train)
    mean = float(train.images.mean())  # Caffe-style: the training set's mean, a scalar for one channel
    x_train, x_held = cls_train.to_network(train.images, mean), cls_train.to_network(held.images, mean)
    preprocessing = cls_train.gray_preprocessing(mean)

    c_config = CaffeNetConfig.mnist()
    c_cfg = cls_train.ClassifierTrainConfig(steps=args.classifier_steps, batch_size=args.batch_size)
    t0 = time.perf_counter()
    c_params, c_hist = cls_train.train_classifier(x_train, train.labels, c_config, c_cfg, args.seed)
    c_time = time.perf_counter() - t0
    clf = CaffeNet(c_config)
    held_pred = batched(cls_train.make_predict(clf), c_params, x_held)
    c_acc = float(np.mean(held_pred == held.labels))
    print(f"classifier: held-out accuracy {c_acc:.4f} ({c_time:.0f} s)")

    g_config = GeneratorConfig.mnist(code_size=c_config.fc[0])
    g_cfg = gen_train.GeneratorTrainConfig(steps=args.generator_steps, batch_size=args.batch_size)
    t0 = time.perf_counter()
    g_params, g_hist = gen_train.train_generator(x_train, clf, c_params, g_config, g_cfg, args.seed)
    g_time = time.perf_counter() - t0
    gen = Generator(g_config)
    rec = gen_train.reconstruct(gen, clf, g_params, c_params, x_held)
    rec_pred = batched(cls_train.make_predict(clf), c_params, rec)
    agreement = float(np.mean(rec_pred == held.labels))
    agreement_pred = float(np.mean(rec_pred == held_pred))
    image_mse = float(np.mean(np.square(rec - x_held)))
    print(f"generator: G(E(x)) keeps the label of x for {agreement:.4f} of held-out digits "
          f"(the classifier's label of x: {agreement_pred:.4f}); image MSE {image_mse:.1f} ({g_time:.0f} s)")

    bounds = code_bounds(fc6_codes(clf, c_params, x_train))
    total_time = time.perf_counter() - t_start
    figures = {"heldout_accuracy": c_acc, "heldout_label_agreement": agreement,
               "heldout_agreement_with_classifier_label": agreement_pred, "heldout_image_mse": image_mse,
               "classifier_seconds": round(c_time, 1), "generator_seconds": round(g_time, 1),
               "total_seconds": round(total_time, 1)}
    common = {"data": MNIST_SOURCE, "data_files": ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
              "split": f"first {args.n_train} examples train, last {len(held.labels)} held out (file order)",
              "seed": args.seed, "script": "python -m jaxviz.training.embedded_pair", "machine": _machine(),
              "load_average_at_start": round(load_start, 2),
              "date": datetime.date.today().isoformat()}
    c_meta = {"architecture": "caffenet", "config": c_config.to_dict(), "preprocessing": preprocessing,
              "classes": [str(d) for d in range(10)],
              "training": {**common, "hyperparameters": c_cfg._asdict(), "optimizer": "adamw, warmup + cosine",
                           "loss_history": c_hist, "seconds": round(c_time, 1),
                           "metrics": {"heldout_accuracy": c_acc}}}
    g_meta = {"architecture": "generator", "config": g_config.to_dict(),
              "preprocessing": {**preprocessing, "note": "the output image is already in the classifier's "
                                "input space; crop the centre 28x28 (offset 2) before the classifier"},
              "code": {"source": "the embedded classifier's fc6 after ReLU", "size": c_config.fc[0],
                       "bounds_file": f"../{BOUNDS_FILE}",
                       "bounds": f"{BOUND_SIGMAS:g} standard deviations of fc6 per unit over the "
                                 f"{args.n_train} training images"},
              "training": {**common, "hyperparameters": g_cfg._asdict(), "optimizer": "adam, warmup + cosine",
                           "loss": "image MSE / var(x) + fc6 feature MSE / mean(h^2); classifier frozen",
                           "loss_history": g_hist, "seconds": round(g_time, 1),
                           "metrics": {k: figures[k] for k in ("heldout_label_agreement",
                                                               "heldout_agreement_with_classifier_label",
                                                               "heldout_image_mse")}}}
    for name, params, meta in (("classifier", c_params, c_meta), ("generator", g_params, g_meta)):
        checkpoint.save(out / name, params, meta)
    np.save(out / BOUNDS_FILE, bounds)
    n_demo = min(args.demo_digits, len(held.labels))
    np.savez_compressed(out / DIGITS_FILE, images=held.images[:n_demo], labels=held.labels[:n_demo],
                        indices=np.arange(args.n_train, args.n_train + n_demo),
                        source=np.array(MNIST_SOURCE + "; indices into the t10k files"))
    sizes = {"classifier_params": param_count(c_params), "generator_params": param_count(g_params),
             "bytes_on_disk": _folder_bytes(out)}
    (out / NOTE_FILE).write_text(training_note(args, mean, figures, sizes, bounds, c_cfg, g_cfg, common))
    (out / "figures.json").write_text(json.dumps({**figures, **sizes}, indent=2))
    print(json.dumps({**figures, **sizes}, indent=2))
    return figures


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def training_note(args: argparse.Namespace, mean: float, figures: dict[str, Any], sizes: dict[str, int],
                  bounds: np.ndarray, c_cfg: Any, g_cfg: Any, common: dict[str, Any]) -> str:
    """TRAINING.md: how the shipped pair was made, and what it scores."""
    return f"""# The embedded default pair: how it was trained

Made by `python -m jaxviz.training.embedded_pair --data ../shared/data/mnist-t10k --out {args.out} --seed {args.seed}`
(`--classifier-steps {c_cfg.steps} --generator-steps {g_cfg.steps} --batch-size {args.batch_size}`).

- **Data**: {MNIST_SOURCE}. Split: {common['split']}.
  `heldout_digits.npz` holds the first {args.demo_digits} held-out digits (t10k indices
  {args.n_train}..{args.n_train + args.demo_digits - 1}) for the demo.
- **Input space** (Caffe-style): x = pixel (0-255, MNIST's own values: 0 is the black background)
  minus the training mean {mean:.4f} (a single channel, "gray"); NHWC 28x28x1.
- **Classifier** (`classifier/`, architecture "caffenet", `CaffeNetConfig.mnist()`): CaffeNet's topology and
  layer types at small widths: conv1 32 5x5, max pool 3/2 (Caffe ceil: 28->14), LRN, conv2 64 5x5 group 2,
  pool (14->7), LRN, conv3 96, conv4 96 group 2, conv5 64 group 2, pool (7->3), fc6 256, fc7 256 (dropout 0.5
  after each), fc8 10. {sizes['classifier_params']:,} parameters. Data-dependent init (each layer scaled to unit
  output std; the fc6 and fc7 biases at {c_cfg.hidden_fc_bias:g}, as AlexNet starts its hidden layers, so fewer
  fc6 units die), AdamW (lr {c_cfg.learning_rate:g}, weight decay {c_cfg.weight_decay:g}, warm-up then cosine decay),
  {c_cfg.steps} steps of {c_cfg.batch_size} (random shifts up to {c_cfg.max_shift} px), softmax cross-entropy.
- **Generator** (`generator/`, architecture "generator", `GeneratorConfig.mnist(256)`): the DeePSiM fc6
  generator's layers at small widths: defc7 256, defc6 256, defc5 512 -> reshape 32x4x4 -> deconvolutions
  4->8->16->32 (leaky ReLU 0.3, last one linear) -> 1x32x32 in the classifier's input space; the classifier
  sees the centre 28x28 crop (offset 2). {sizes['generator_params']:,} parameters. Trained to invert the
  frozen classifier's fc6 (after ReLU): loss = |crop(G(h)) - x|^2 / var(x) + |E(crop(G(h))) - h|^2 / mean(h^2),
  h = E(x); Adam (lr {g_cfg.learning_rate:g}, warm-up then cosine), {g_cfg.steps} steps of {g_cfg.batch_size}
  (shifts up to {g_cfg.max_shift} px). No adversarial term: the label agreement was already high without it.
- **Code bounds** (`fc6_bounds.npy`, float32 [{bounds.size}]): {BOUND_SIGMAS:g} standard deviations of each fc6
  unit over the {args.n_train} training images, as DGN-AM describes; range {bounds.min():.2f}..{bounds.max():.2f},
  mean {bounds.mean():.2f}, {int(np.sum(bounds == 0))} units never active (bound 0).
- **Seed**: {args.seed} (JAX PRNG for init, dropout and shifts; numpy for batch order).

## Figures (the held-out part)

| | |
| --- | --- |
| classifier accuracy | {figures['heldout_accuracy']:.4f} |
| label agreement: classifier gives G(E(x)) the true label of x | {figures['heldout_label_agreement']:.4f} |
| ... the classifier's own label of x | {figures['heldout_agreement_with_classifier_label']:.4f} |
| image MSE of crop(G(E(x))) (0-255 scale) | {figures['heldout_image_mse']:.1f} |

## Time

On {common['machine']}, shared with other work (1-minute load average at start
{common['load_average_at_start']}): classifier {figures['classifier_seconds']:.0f} s, generator
{figures['generator_seconds']:.0f} s, total {figures['total_seconds']:.0f} s ({figures['total_seconds'] / 60:.1f} min)
including data loading and evaluation. Weights and files: {sizes['bytes_on_disk'] / 1e6:.2f} MB.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
