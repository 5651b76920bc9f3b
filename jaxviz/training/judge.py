"""Train the embedded "judge": an independent LeNet that gives a second opinion on the embedded pair's images.

    python -m jaxviz.training.judge --data ../shared/data/mnist-t10k --out <fresh folder>

The judge is independent of the embedded classifier in architecture (Caffe's MNIST LeNet, not a small
CaffeNet) and in data: it trains on t10k indices 2000..7999 and 9000..9999 and never sees 8000..8999,
which neither network has seen and which ship as ``reference_digits.npz`` (the reference set that
scoring uses for per-unit percentiles). It reads the embedded classifier's input space (gray, pixel 0-255
minus the classifier's training mean, taken from that classifier's card), so an image synthesized for the
classifier is judged as it is. Synthesized images are not clean digits: training adds random shifts,
contrast and brightness changes and Gaussian pixel noise.

Writes into ``--out`` (refused when it exists and is not empty): the model folder itself (``params/``
orbax checkpoint and ``metadata.json`` card, loadable with ``jaxviz.models.load("lenet", out)``),
``reference_digits.npz`` and ``TRAINING.md`` (the section for ``jaxviz/data/embedded/TRAINING.md``);
prints the figures. Shipping it: copy ``params/`` and ``metadata.json`` into ``jaxviz/data/embedded/judge/``
and ``reference_digits.npz`` into ``jaxviz/data/embedded/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz.models import checkpoint, load
from jaxviz.models.lenet import LeNet, LeNetConfig
from jaxviz.training import mnist
from jaxviz.training.classifier import make_optimizer
from jaxviz.training.common import Params, batch_indices, batched, data_dependent_init, param_count, random_shift

# t10k index ranges [start, stop): the judge's training digits, and the reference digits nobody trains on
# (the embedded classifier trained on 0..7999, so 8000..8999 are unseen by both networks).
TRAIN_RANGES = ((2000, 8000), (9000, 10000))
REFERENCE_RANGE = (8000, 9000)
REFERENCE_FILE = "reference_digits.npz"
NOTE_FILE = "TRAINING.md"
NOISE_STD = 30.0        # the sanity check: pure N(0, 30^2) images in the input space
NOISE_IMAGES = 100
MNIST_SOURCE = ("MNIST test set (t10k, 10000 images; Y. LeCun, C. Cortes, C. J. C. Burges; "
                "usually cited as CC BY-SA 3.0), original IDX gzip files")


class JudgeTrainConfig(NamedTuple):
    """Hyper-parameters of the judge's run (augmentations act on the 0-255 pixel scale)."""

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    max_shift: int = 2               # random translations up to this many pixels (background filled)
    contrast: tuple[float, float] = (0.5, 1.5)     # pixel *= U(lo, hi), per image
    brightness: float = 25.0         # pixel += U(-b, b), per image
    noise_probability: float = 0.5   # share of images that get Gaussian pixel noise
    max_noise_std: float = 50.0      # their noise std ~ U(0, max)
    init_batch: int = 256


def train_indices() -> np.ndarray:
    """The t10k indices the judge trains on (7000, in file order)."""
    return np.concatenate([np.arange(a, b) for a, b in TRAIN_RANGES])


def reference_indices() -> np.ndarray:
    """The t10k indices of the reference digits (1000, never trained on by the judge or the classifier)."""
    return np.arange(*REFERENCE_RANGE)


def augment(key: jax.Array, x: jax.Array, mean: float, cfg: JudgeTrainConfig) -> jax.Array:
    """Shifts, then per-image contrast and brightness, then Gaussian noise on some images (network space)."""
    k_shift, k_con, k_bri, k_on, k_std, k_noise = jax.random.split(key, 6)
    n = x.shape[0]
    x = random_shift(k_shift, x, cfg.max_shift, -mean)
    contrast = jax.random.uniform(k_con, (n, 1, 1, 1), minval=cfg.contrast[0], maxval=cfg.contrast[1])
    brightness = jax.random.uniform(k_bri, (n, 1, 1, 1), minval=-cfg.brightness, maxval=cfg.brightness)
    pixels = (x + mean) * contrast + brightness
    noisy = jax.random.bernoulli(k_on, cfg.noise_probability, (n, 1, 1, 1))
    std = jax.random.uniform(k_std, (n, 1, 1, 1), maxval=cfg.max_noise_std) * noisy
    pixels = pixels + std * jax.random.normal(k_noise, x.shape)
    return pixels - mean


def init_judge(model: LeNet, x: jax.Array, key: jax.Array) -> Params:
    """Parameters scaled so every layer's output has unit std on ``x``; ip2 at 0.1 for calm first steps."""
    params = model.init(key, x[:1], taps=("ip2",))["params"]

    def apply(p, inputs, taps):
        return model.apply({"params": p}, inputs, taps=taps)

    return data_dependent_init(apply, params, x, [("conv1", "conv1", 1.0), ("conv2", "conv2", 1.0),
                                                  ("ip1", "ip1:pre", 1.0), ("ip2", "ip2", 0.1)])


def make_train_step(model: LeNet, optimizer: optax.GradientTransformation, mean: float,
                    cfg: JudgeTrainConfig) -> Callable:
    """A jitted ``step(params, opt_state, x, y, key) -> (params, opt_state, loss)`` on augmented x."""

    def loss_fn(params, x, y, key):
        logits = model.apply({"params": params}, augment(key, x, mean, cfg), taps=("ip2",))["ip2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_probabilities(module: Any) -> Callable:
    """A jitted ``probabilities(params, x) -> softmax`` for a LeNet ("prob") or CaffeNet ("fc8") module."""
    tap = "ip2" if isinstance(module, LeNet) else "fc8"

    @jax.jit
    def probabilities(params, x):
        return jax.nn.softmax(module.apply({"params": params}, x, taps=(tap,))[tap], axis=-1)

    return probabilities


def train_judge(x: np.ndarray, labels: np.ndarray, mean: float, config: LeNetConfig, cfg: JudgeTrainConfig,
                seed: int, log: Callable[[str], None] = print,
                log_every: int = 500) -> tuple[Params, list[tuple[int, float]]]:
    """Train on network-space ``x`` with ``labels``; returns params and the (step, mean loss) history."""
    model = LeNet(config)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    init_x = jnp.asarray(x[rng.choice(len(x), min(cfg.init_batch, len(x)), replace=False)])
    params = init_judge(model, init_x, init_key)
    optimizer = make_optimizer(cfg.learning_rate, cfg.steps, cfg.weight_decay)
    opt_state = optimizer.init(params)
    step = make_train_step(model, optimizer, mean, cfg)
    labels = labels.astype(np.int32)
    history, running, t0 = [], [], time.perf_counter()
    for i, idx in enumerate(batch_indices(len(x), cfg.batch_size, cfg.steps, rng)):
        params, opt_state, loss = step(params, opt_state, x[idx], labels[idx], jax.random.fold_in(step_key, i))
        running.append(loss)
        if (i + 1) % log_every == 0 or i + 1 == cfg.steps:
            history.append((i + 1, float(np.mean(jax.device_get(running)))))
            running = []
            log(f"judge step {i + 1}/{cfg.steps}: loss {history[-1][1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    return params, history


def evaluate(judge: LeNet, params: Params, x_ref: np.ndarray, y_ref: np.ndarray, mean: float,
             classifier_probs: np.ndarray, seed: int) -> dict[str, Any]:
    """The judge's figures: reference accuracy (clean, noisy, low contrast), agreement, pure-noise labels."""
    probs = make_probabilities(judge)
    pred = batched(probs, params, x_ref).argmax(-1)
    rng = np.random.default_rng(seed + 1000)  # fixed draws, not the training stream
    noisy_ref = (x_ref + rng.normal(0.0, NOISE_STD, x_ref.shape)).astype(np.float32)
    faint_ref = ((x_ref + mean) * 0.5 - mean).astype(np.float32)
    noise = rng.normal(0.0, NOISE_STD, (NOISE_IMAGES, *x_ref.shape[1:])).astype(np.float32)
    p_noise = batched(probs, params, noise, batch_size=NOISE_IMAGES)
    c_pred = classifier_probs.argmax(-1)
    counts = np.bincount(p_noise.argmax(-1), minlength=p_noise.shape[-1])
    return {
        "reference_accuracy": float(np.mean(pred == y_ref)),
        "reference_accuracy_embedded_classifier": float(np.mean(c_pred == y_ref)),
        "reference_agreement_with_embedded_classifier": float(np.mean(pred == c_pred)),
        "reference_accuracy_noise30": float(np.mean(batched(probs, params, noisy_ref).argmax(-1) == y_ref)),
        "reference_accuracy_half_contrast": float(np.mean(batched(probs, params, faint_ref).argmax(-1) == y_ref)),
        "noise_images": NOISE_IMAGES, "noise_std": NOISE_STD,
        "noise_label_counts": counts.tolist(),
        "noise_mean_max_probability": float(p_noise.max(-1).mean()),
        "noise_max_max_probability": float(p_noise.max(-1).max()),
        "noise_share_above_0.9": float(np.mean(p_noise.max(-1) > 0.9)),
    }


def _machine() -> str:
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})"


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def fresh_folder(path: str | os.PathLike) -> pathlib.Path:
    """``path`` as a folder to write into: created if absent; an existing non-empty one is refused."""
    out = pathlib.Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; give a fresh --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (defaults are the shipped run)."""
    p = argparse.ArgumentParser(prog="python -m jaxviz.training.judge", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True,
                   help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    p.add_argument("--out", required=True, help="a fresh (absent or empty) output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=JudgeTrainConfig().steps)
    p.add_argument("--batch-size", type=int, default=JudgeTrainConfig().batch_size)
    p.add_argument("--classifier", default=None,
                   help="the classifier whose input space the judge reads (default: the embedded one)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train the judge, evaluate it on the reference digits, write everything into ``args.out``."""
    out = fresh_folder(args.out)
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    classifier = load("caffenet", args.classifier)
    preprocessing = dict(classifier.preprocessing)
    if str(preprocessing.get("channel_order", "")).lower() != "gray" or len(preprocessing.get("mean", ())) != 1:
        raise ValueError(f"the judge reads gray digits; the classifier's card says {preprocessing}")
    mean = float(preprocessing["mean"][0])
    digits = mnist.load_idx(args.data)
    if len(digits.labels) != 10000:
        raise ValueError(f"{args.data}: expected the 10000 t10k digits, found {len(digits.labels)}")
    tr, ref = train_indices(), reference_indices()
    assert not set(tr.tolist()) & set(ref.tolist())
    x_train = (digits.images[tr].astype(np.float32) - np.float32(mean))[..., None]
    x_ref = (digits.images[ref].astype(np.float32) - np.float32(mean))[..., None]
    y_train, y_ref = digits.labels[tr], digits.labels[ref].astype(np.int64)

    config = LeNetConfig()
    cfg = JudgeTrainConfig(steps=args.steps, batch_size=args.batch_size)
    t0 = time.perf_counter()
    params, hist = train_judge(x_train, y_train, mean, config, cfg, args.seed)
    train_time = time.perf_counter() - t0
    classifier_probs = batched(make_probabilities(classifier.module), classifier.params, x_ref)
    figures = evaluate(LeNet(config), params, x_ref, y_ref, mean, classifier_probs, args.seed)
    total_time = time.perf_counter() - t_start
    figures.update(train_seconds=round(train_time, 1), total_seconds=round(total_time, 1))

    split = (f"t10k indices {TRAIN_RANGES[0][0]}..{TRAIN_RANGES[0][1] - 1} and {TRAIN_RANGES[1][0]}.."
             f"{TRAIN_RANGES[1][1] - 1} train ({len(tr)} digits); {REFERENCE_RANGE[0]}..{REFERENCE_RANGE[1] - 1} "
             f"never trained on (the reference digits); 0..1999 unused")
    meta = {"architecture": "lenet", "config": config.to_dict(),
            "preprocessing": {**preprocessing, "note": "the embedded classifier's input space (its card), "
                                                       "so its synthesized images are judged as they are"},
            "classes": [str(d) for d in range(10)],
            "role": "independent second-opinion classifier of the embedded pair's images (the judge)",
            "training": {"data": MNIST_SOURCE, "data_files": ["t10k-images-idx3-ubyte.gz",
                                                              "t10k-labels-idx1-ubyte.gz"],
                         "split": split, "train_ranges": [list(r) for r in TRAIN_RANGES],
                         "train_examples": int(len(tr)), "reference_range": list(REFERENCE_RANGE),
                         "reference_file": f"../{REFERENCE_FILE}",
                         "seed": args.seed, "script": "python -m jaxviz.training.judge",
                         "hyperparameters": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in cfg._asdict().items()},
                         "optimizer": "adamw, warmup + cosine", "loss": "softmax cross-entropy",
                         "augmentation": "random shift, contrast, brightness, Gaussian noise (0-255 scale)",
                         "init": "data-dependent (each layer scaled to unit output std, ip2 0.1)",
                         "loss_history": hist, "seconds": round(train_time, 1), "machine": _machine(),
                         "load_average_at_start": round(load_start, 2),
                         "date": datetime.date.today().isoformat(), "metrics": figures}}
    checkpoint.save(out, params, meta)
    np.savez_compressed(out / REFERENCE_FILE, images=digits.images[ref], labels=digits.labels[ref],
                        indices=ref, source=np.array(MNIST_SOURCE + "; indices into the t10k files"))
    sizes = {"params": param_count(params), "bytes_on_disk": _folder_bytes(out / checkpoint.PARAMS_DIR)
             + (out / checkpoint.METADATA_FILE).stat().st_size,
             "reference_bytes": (out / REFERENCE_FILE).stat().st_size}
    (out / NOTE_FILE).write_text(training_note(args, mean, figures, sizes, cfg, meta["training"]))
    print(json.dumps({**figures, **sizes}, indent=2))
    return {**figures, **sizes}


def training_note(args: argparse.Namespace, mean: float, figures: dict[str, Any], sizes: dict[str, int],
                  cfg: JudgeTrainConfig, training: dict[str, Any]) -> str:
    """The TRAINING.md section of the judge: how it was made, on what, and what it scores."""
    counts = figures["noise_label_counts"]
    return f"""
## The judge: an independent LeNet (`judge/`, architecture "lenet")

Made by `python -m jaxviz.training.judge --data ../shared/data/mnist-t10k --out <fresh folder> --seed {args.seed}`
(`--steps {cfg.steps} --batch-size {cfg.batch_size}`), then `params/` and `metadata.json` copied into
`judge/` and `reference_digits.npz` into this folder. `jaxviz.models.load("lenet")` returns it.

- **Role**: a second opinion on images synthesized for the embedded classifier (e.g. the label of an fc8
  unit's image), independent of it in architecture and in data.
- **Data split** (MNIST t10k, as above): {training['split']}.
  `reference_digits.npz` holds t10k {REFERENCE_RANGE[0]}..{REFERENCE_RANGE[1] - 1} (1000 digits, uint8, with labels
  and indices): unseen by both the judge and the embedded classifier (which trained on 0..7999), the
  reference set that scoring uses for per-unit percentiles.
- **Input space**: the embedded classifier's, read from its card: x = pixel (0-255) minus {mean:.4f}, gray,
  NHWC 28x28x1; a synthesized image is judged as it is.
- **Architecture**: LeNet as in Caffe's MNIST example: conv1 20 5x5 -> max pool 2/2 -> conv2 50 5x5 ->
  max pool 2/2 -> ip1 500 -> ReLU -> ip2 10 (no non-linearity after the convolutions, as in Caffe's).
  {sizes['params']:,} parameters. Data-dependent init, AdamW (lr {cfg.learning_rate:g}, weight decay
  {cfg.weight_decay:g}, warm-up then cosine), {cfg.steps} steps of {cfg.batch_size}, softmax cross-entropy.
- **Augmentation** (pixel scale): shifts up to {cfg.max_shift} px, contrast x U({cfg.contrast[0]:g}, {cfg.contrast[1]:g}),
  brightness + U(-{cfg.brightness:g}, {cfg.brightness:g}), and on {cfg.noise_probability:.0%} of the images Gaussian
  noise of std U(0, {cfg.max_noise_std:g}); nothing is clipped (synthesized images are not either).
- **Seed**: {args.seed} (JAX PRNG for init and augmentation; numpy for batch order and the evaluation noise).

| on the 1000 reference digits | |
| --- | --- |
| judge accuracy | {figures['reference_accuracy']:.4f} |
| embedded classifier accuracy | {figures['reference_accuracy_embedded_classifier']:.4f} |
| judge agrees with the embedded classifier | {figures['reference_agreement_with_embedded_classifier']:.4f} |
| judge accuracy, + N(0, 30^2) pixel noise | {figures['reference_accuracy_noise30']:.4f} |
| judge accuracy, contrast halved | {figures['reference_accuracy_half_contrast']:.4f} |

Sanity check on {figures['noise_images']} pure N(0, {figures['noise_std']:g}^2) images in the input space: labels 0..9
counted {counts}; mean top probability {figures['noise_mean_max_probability']:.3f} (highest
{figures['noise_max_max_probability']:.3f}; {figures['noise_share_above_0.9']:.0%} above 0.9).

Time on {training['machine']}, shared with other work (1-minute load average at start
{training['load_average_at_start']}): training {figures['train_seconds']:.0f} s, total {figures['total_seconds']:.0f} s
({figures['total_seconds'] / 60:.1f} min) including data loading and evaluation. Weights and card: {sizes['bytes_on_disk'] / 1e6:.2f} MB;
`reference_digits.npz`: {sizes['reference_bytes'] / 1e3:.0f} kB.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a folder that is not fresh, or data that is not t10k, is one line and exit code 2."""
    args = parse_args(argv)
    try:
        run(args)
    except (FileExistsError, ValueError) as err:
        print(f"python -m jaxviz.training.judge: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
