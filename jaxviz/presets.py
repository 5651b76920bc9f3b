"""The seed papers' methods with their original settings, as ready-made optimization setups.

A ``Preset`` bundles a parameterization, a ``Method`` (step count, optax update rule, prior operators,
transform), the generator's weights when the image is ``G(code)``, and optionally a default objective
and target. "Original" means what the authors' public code does, since that is what reproduces their
figures (``methods.md``); every departure from it is named in the constructor's docstring.

- ``dgn_am``: Nguyen et al. 2016, the fc6 code of a generator moved by ``h += lr_i u / mean|u|``,
  ``u = J_G^T g``, then clipped to ``[0, ub]`` and multiplied by 0.99.
- ``ppgn_sampler``: the PPGN-style sampler of the survey seed (eq. 11/13) in the same loop:
  ``d_h = eps1 (E(G(h)) - h) + eps2 J_G^T d log p(y_c|x)/dx + N(0, eps3^2)``, ``h += lr d_h / mean|d_h|``,
  clip to ``[0, 30]``.
- ``yosinski2015``: the four hand-designed-prior settings of Yosinski et al. 2015, Table 1.
- ``mahendran_vedaldi``: regularized feature inversion with the public code's constants.
- ``generator_inversion``: ``x = crop(G(E(x0)))`` in one forward pass (the UpconvNet inversion).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import priors
from jaxviz import transforms as T
from jaxviz.models.generator import crop_to_classifier
from jaxviz.objectives import CODE, Acts, Objective, feature_inversion, unit_values
from jaxviz.optimize import Method, Result, scale_by_mean_abs
from jaxviz.api import module_apply, visualize, visualize_batch
from jaxviz.param import GeneratorCode, Parameterization, fourier_image_for


# ----- the preset ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Preset:
    """A method with its settings: parameterization, update rule and priors, generator weights, defaults."""

    param: Parameterization
    method: Method
    aux_params: Any = None               # the generator's params when the image is G(code)
    objective: Objective | None = None   # default objective (the sampler's, the inversion's)
    target: Any = None                   # default target (the inversion's reference features)
    name: str = "preset"

    def _objective(self, objective: Objective | None) -> Objective:
        chosen = objective if objective is not None else self.objective
        if chosen is None:
            raise ValueError(f"preset {self.name!r} has no default objective: pass one, e.g. "
                             f"objectives.unit('fc8', 3)")
        return chosen

    def visualize(self, net: Any, objective: Objective | None = None, key: jax.Array | None = None,
                  target: Any = None, z0: jax.Array | None = None) -> Result:
        """One run of this preset on ``net`` (``jaxviz.visualize`` with the preset's setup)."""
        return visualize(net, self._objective(objective), self.param, key=key, method=self.method,
                         aux_params=self.aux_params, target=self.target if target is None else target, z0=z0)

    def visualize_batch(self, net: Any, objective: Objective | None = None, keys: jax.Array | None = None,
                        targets: Any = None, z0: jax.Array | None = None) -> Result:
        """Many runs of this preset in one compiled program (``jaxviz.visualize_batch``)."""
        return visualize_batch(net, self._objective(objective), self.param, keys=keys,
                               targets=self.target if targets is None else targets, method=self.method,
                               aux_params=self.aux_params, z0=z0)


# ----- the modern libraries' default ---------------------------------------------------------------------

def lucid(image_shape: Sequence[int], preprocessing: dict | None = None, steps: int = 512, lr: float = 0.05,
          robust: bool = True) -> Preset:
    """Lucid's / Lucent's default: a Fourier, colour-decorrelated image, Adam (0.05, 512 steps) and the
    standard robustness transforms (jitter, scale, rotate), adapted to fixed-size inputs."""
    h, w = int(image_shape[0]), int(image_shape[1])
    method = Method(steps, optax.adam(lr), transform=T.standard_transforms() if robust else None, name="lucid")
    return Preset(fourier_image_for(h, w, preprocessing), method, name="lucid")


# ----- DGN-AM -------------------------------------------------------------------------------------------

def generator_code_bounds(generator: Any) -> np.ndarray:
    """Per-unit upper bounds of a generator's code: DGN-AM's fc6 file for 4096 codes, else its metadata."""
    size = int(generator.config.code_size)
    if size == 4096:
        return priors.dgn_am_fc6_bounds()
    bounds = _metadata_bounds(generator)
    if bounds is None:
        raise ValueError(f"no code bounds known for this generator (code size {size}): its metadata names "
                         f"none that can be found; pass bounds= explicitly (DGN-AM: 3 standard deviations of "
                         f"each encoder unit over real images, or one global bound such as 30)")
    return _check_bounds(bounds, size)


def _metadata_bounds(generator: Any) -> np.ndarray | None:
    # A model card carries its bounds inline ("bounds": [...]) or as a file beside its folder
    # ("bounds_file"). A Model does not record where it was loaded from, so a file is only found for the
    # embedded default, recognised by its card being the shipped one.
    code = dict((getattr(generator, "metadata", None) or {}).get("code") or {})
    if isinstance(code.get("bounds"), (list, tuple)):
        return np.asarray(code["bounds"], np.float32)
    name = code.get("bounds_file")
    if not name:
        return None
    from jaxviz.models import checkpoint, zoo
    folder = zoo.embedded_dir("generator")
    try:
        shipped = checkpoint.read_metadata(folder)
    except checkpoint.CheckpointError:
        return None
    if shipped != dict(generator.metadata):
        return None
    path = pathlib.Path(folder) / name
    return np.load(path).astype(np.float32) if path.is_file() else None


def _check_bounds(bounds: Any, size: int) -> np.ndarray:
    b = np.asarray(bounds, np.float32)
    if b.ndim == 1 and b.shape != (size,):
        raise ValueError(f"code bounds have {b.shape[0]} values; the generator's code has {size} units")
    if b.ndim > 1:
        raise ValueError(f"code bounds must be a scalar or one value per code unit, got shape {b.shape}")
    return b


def linear_schedule(start: float, end: float, n: int) -> optax.Schedule:
    """``lr_i = start + (end - start) * i / n`` (DGN-AM's and PPGN's step size; ``i`` from 0)."""
    return lambda i: start + (end - start) * jnp.asarray(i, jnp.float32) / n


def dgn_am(generator: Any, bounds: Any = None, steps: int = 200, lr_start: float = 8.0, lr_end: float = 1e-10,
           decay: float = 0.01) -> Preset:
    """DGN-AM (Nguyen et al. 2016) as its public code runs it; target conv units with ``position="center"``.

    ``steps`` counts forward passes, as the original's ``n_iters``: it returns the image of its last
    forward pass, ``G(h_{n-1})``, so the loop makes ``steps - 1`` updates and ``Result.image`` is that
    image (``Result.z`` the code it came from). Update ``i``: ``h += lr_i u / mean|u|``, ``u = J_G^T g``,
    ``lr_i = lr_start + (lr_end - lr_start) i / steps``; then clip each unit to ``[0, ub_j]``, then
    ``h *= 1 - decay``; stop when the gradient is exactly zero. Start ``h ~ N(0, 1)`` from the key.

    Departures: the original's returned image is the last forward pass's image after its own pixel step
    (``lr_{n-1} g / mean|g|``, about 0.04 on the 0-255 scale); a NaN gradient stops the run here (the
    engine's rule) where the original skips that update; the mean-abs division has a 1e-12 guard.
    """
    if steps < 1:
        raise ValueError(f"dgn_am needs steps >= 1, got {steps}")
    ub = _check_bounds(bounds, generator.config.code_size) if bounds is not None else generator_code_bounds(generator)
    method = Method(
        steps=steps - 1,
        optimizer=optax.chain(scale_by_mean_abs(), optax.scale_by_learning_rate(
            linear_schedule(lr_start, lr_end, steps))),
        operator=priors.chain(priors.clip_code(0.0, ub), priors.decay(decay)),
        stop_on_zero_grad=True, name="dgn_am")
    return Preset(GeneratorCode(generator.module), method, generator.params, name="dgn_am")


# ----- PPGN-style sampler ---------------------------------------------------------------------------------

def ppgn_prior(encoder_layer: str = "fc6") -> Objective:
    """An objective whose gradient w.r.t. the code is exactly ``E(G(h)) - h`` (its value is 0).

    ``sum(stop_gradient(E(G(h)) - h) * (h - stop_gradient(h)))``: the reconstruction loop's "denoising"
    direction of PPGN (Alain & Bengio's ``d log p(h)/dh``), which is not the gradient of any scalar.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        h, e = acts[CODE], acts[encoder_layer]
        if e.shape != h.shape:
            raise ValueError(f"the sampler's encoder layer {encoder_layer!r} has shape {e.shape[1:]} but the "
                             f"generator's code has {h.shape[1:]}: E must map images to codes")
        return jnp.sum(jax.lax.stop_gradient(e - h) * (h - jax.lax.stop_gradient(h)))
    return Objective(fn, frozenset({encoder_layer, CODE}), f"ppgn_prior({encoder_layer})")


def ppgn_condition(class_layer: str = "fc8", index: int | None = None, exact: bool = True) -> Objective:
    """``log p(y_c|x)`` with its exact gradient, or PPGN's diagonal approximation ``(1 - s_c) d a_c/dx``.

    Either way the value is ``log softmax_c``; with ``exact=False`` the gradient is the public code's
    one-hot ``(1 - s_c)`` at the target unit, dropping the ``-sum_{j != c} s_j d a_j/dx`` terms.
    """
    def fn(acts: Acts, target: Any) -> jax.Array:
        a = unit_values(acts, class_layer, "center")
        c = jnp.asarray(target if index is None else index, jnp.int32)
        log_s = jnp.take(jax.nn.log_softmax(a, axis=-1), c, axis=-1)
        if exact:
            return log_s.sum()
        a_c = jnp.take(a, c, axis=-1)
        sg = jax.lax.stop_gradient
        return jnp.sum(sg(log_s) + sg(1.0 - jnp.exp(log_s)) * (a_c - sg(a_c)))
    kind = "exact" if exact else "diagonal"
    return Objective(fn, frozenset({class_layer}), f"ppgn_condition({class_layer}, {index}, {kind})",
                     class_layer, "center", index)


def sampler_noise_key(code: jax.Array, seed: int = 0) -> jax.Array:
    """The sampler noise's PRNG key, derived from the starting code (optax's ``init`` gets no key).

    The start ``h0 ~ N(0, 1)`` is drawn from the run's key, so the noise stream is a function of the run
    key too (and of ``z0`` when a start is given): same key, same samples; another key, other noise.
    """
    bits = jax.lax.bitcast_convert_type(jnp.asarray(code, jnp.float32).ravel(), jnp.uint32)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    digest = jnp.sum(bits * weights, dtype=jnp.uint32)  # wraps mod 2^32: any mix that is deterministic
    return jax.random.fold_in(jax.random.key(seed), digest)


class _NoiseState(NamedTuple):
    key: jax.Array


def add_gaussian_noise(std: float, seed: int = 0) -> optax.GradientTransformation:
    """Add ``N(0, std^2)`` to the ascent direction (before any normalization), from a key kept in the state.

    The loop feeds optax ``-d_h``; adding ``-n`` makes the direction ``d_h + n`` exactly as eq. 13 writes it.
    Each update splits the state's key: ``key, sub = split(key)``, ``n = std * normal(sub)``.
    """
    def init(params: jax.Array) -> _NoiseState:
        return _NoiseState(sampler_noise_key(params, seed))

    def update(updates, state: _NoiseState, params=None):
        del params
        key, sub = jax.random.split(state.key)
        noise = std * jax.random.normal(sub, updates.shape, updates.dtype)
        return updates - noise, _NoiseState(key)
    return optax.GradientTransformation(init, update)


def ppgn_sampler(generator: Any, encoder_layer: str = "fc6", class_layer: str = "fc8", eps1: float = 1e-5,
                 eps2: float = 1.0, eps3: float = 1e-17, lr: float = 1.0, steps: int = 200,
                 clip: tuple[float, float] = (0.0, 30.0), exact_log_softmax: bool = True,
                 lr_end: float | None = None, noise_seed: int = 0) -> Preset:
    """The PPGN-style sampler (survey seed eq. 11/13; PPGN's public ``sampler.py``); the class is the target.

    Per step: ``d_h = eps1 (E(G(h)) - h) + eps2 J_G^T d log p(y_c|x)/dx + N(0, eps3^2)``,
    ``h += lr_i d_h / mean|d_h|``, ``h = clip(h, 0, 30)``; ``E`` is the classifier up to ``encoder_layer``
    (after ReLU), so E(G(h)) and the class gradient come from one forward pass. The epsilon names follow
    PPGN and ``methods.md`` (eps1 the prior, eps2 the condition); the survey's eq. 11 swaps them.
    The noise is added to ``d_h`` before the mean-abs normalization, as eq. 13 and the public code do
    (an operator would add it after the step), by an optax transform keyed from the starting code
    (``sampler_noise_key``). ``exact_log_softmax=False`` uses the public code's diagonal gradient.
    ``steps`` updates are made and ``Result.image`` is ``G`` of the final code, which is the public code's
    last sample. ``lr_end`` (default: ``lr``) gives its linear step-size schedule.
    """
    objective = eps1 * ppgn_prior(encoder_layer) + eps2 * ppgn_condition(class_layer, None, exact_log_softmax)
    schedule = linear_schedule(lr, lr if lr_end is None else lr_end, steps)
    method = Method(
        steps=steps,
        optimizer=optax.chain(add_gaussian_noise(eps3, noise_seed), scale_by_mean_abs(),
                              optax.scale_by_learning_rate(schedule)),
        operator=priors.clip_code(clip[0], clip[1]),
        stop_on_zero_grad=True, name="ppgn_sampler")
    return Preset(GeneratorCode(generator.module), method, generator.params, objective, name="ppgn_sampler")


# ----- Yosinski et al. 2015 ---------------------------------------------------------------------------------

class YosinskiSetting(NamedTuple):
    """One row of Yosinski et al. 2015, Table 1 (with the lr parameters of their optimize_image.py)."""

    decay: float
    blur_radius: float
    blur_every: int
    norm_pct: float
    contribution_pct: float
    iterations: int
    lr: float                  # constant lr, or the cap ``max_lr`` of the "progress" policy
    desired_progress: float | None  # "progress" policy when set: lr = min(max_lr, desired / ||g||^2)


YOSINSKI_2015 = {
    1: YosinskiSetting(0.0, 0.5, 4, 50.0, 0.0, 500, 100.0, 2.0),
    2: YosinskiSetting(0.3, 0.0, 0, 20.0, 0.0, 750, 100.0, None),
    3: YosinskiSetting(1e-4, 1.0, 4, 0.0, 0.0, 1000, 100.0, None),
    4: YosinskiSetting(0.0, 0.5, 4, 0.0, 90.0, 1000, 1e8, 2.0),
}


def progress_gradient_ascent(desired_progress: float, max_lr: float) -> optax.GradientTransformation:
    """``x += lr g`` with ``lr = min(max_lr, desired / ||g||^2)`` per image (Yosinski's "progress" policy).

    Under a linear model of the objective the step raises it by ``desired_progress``; the cap keeps flat
    regions from exploding the step.
    """
    def update(updates, state, params=None):
        del params
        axes = tuple(range(1, updates.ndim))
        sq = jnp.sum(jnp.square(updates), axis=axes, keepdims=True)
        lr = jnp.minimum(max_lr, desired_progress / sq)
        return -lr * updates, state  # updates are -g: the step is +lr g
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (it holds arrays)
class BoundedPixels:
    """Pixels in Caffe space starting at ``init_mean + init_std N(0,1)`` clipped to ``[low, high]``."""

    shape: tuple[int, int, int]
    init_std: float
    low: Any = None
    high: Any = None
    init_mean: float = 0.0
    is_code: bool = False

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting images, inside the valid pixel range."""
        x = self.init_mean + self.init_std * jax.random.normal(key, (n, *self.shape), jnp.float32)
        return jnp.clip(x, self.low, self.high)

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The pixels are the image."""
        return z


def _pixel_range(mean: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    if mean is None:
        return None, None
    m = np.asarray(mean, np.float32)
    return -m, 255.0 - m


def yosinski_operator(setting: YosinskiSetting, mean: Any = None) -> priors.Operator:
    """The priors ``r`` of one setting: decay, blur every k, small-norm clip, small-contribution clip, range."""
    low, high = _pixel_range(mean)
    ops = [priors.decay(setting.decay), priors.gaussian_blur(setting.blur_radius, setting.blur_every),
           priors.clip_norm_percentile(setting.norm_pct),
           priors.clip_contribution_percentile(setting.contribution_pct)]
    if mean is not None:
        # The original clips x + mean to [0, 255] at the top of each iteration, i.e. after these.
        ops.append(priors.clip_value(low, high))
    return priors.chain(*ops)


def yosinski2015(setting: int, image_shape: Sequence[int], mean: Any = None, steps: int | None = None,
                 init_std: float = 10.0) -> Preset:
    """Yosinski et al. 2015, Table 1 setting 1-4: ``x <- r(x + lr g)`` from the mean image plus noise.

    As ``optimize_image.py`` runs it: start ``x0 = N(0, 10^2)`` in Caffe space (the mean image plus
    noise), ``steps`` (default: the table's iterations) forward passes with an update after each but the
    last, so the loop makes ``steps - 1`` updates; ``r`` = ``x *= 1 - decay``, Gaussian blur every k
    steps (``step % k == 0``), zero the pixels under the norm percentile, then those under the
    ``|sum_c x g|`` percentile; stop when the gradient is exactly zero. ``mean`` (scalar, per channel or
    an (H, W, C) image) is what the network subtracts: the original keeps ``x + mean`` in ``[0, 255]``
    (applied after ``r``, and to ``x0``); ``None`` skips that clip. Settings 1 and 4 use the "progress"
    lr ``min(max_lr, 2 / ||g||^2)``. The original saves both the last and the best image: ``Result.image``
    and ``Result.best_image``.
    """
    if setting not in YOSINSKI_2015:
        raise ValueError(f"Yosinski et al. 2015 has settings 1-4, got {setting}")
    s = YOSINSKI_2015[setting]
    n = s.iterations if steps is None else steps
    if n < 1:
        raise ValueError(f"yosinski2015 needs steps >= 1, got {n}")
    optimizer = (optax.sgd(s.lr) if s.desired_progress is None
                 else progress_gradient_ascent(s.desired_progress, s.lr))
    low, high = _pixel_range(mean)
    param = BoundedPixels(tuple(int(d) for d in image_shape), init_std, low, high)
    method = Method(n - 1, optimizer, yosinski_operator(s, mean), stop_on_zero_grad=True,
                    name=f"yosinski2015_{setting}")
    return Preset(param, method, name=f"yosinski2015_{setting}")


# ----- Mahendran & Vedaldi ------------------------------------------------------------------------------------

# Their CNN experiments' lambda_TV by depth (experiment_cnn.m: MatConvNet layers 1-6, 7-12, 13-20).
MV_LAMBDA_TV = {
    **{t: 1.0 for t in ("conv1:pre", "conv1", "pool1", "norm1", "conv2:pre", "conv2")},
    **{t: 10.0 for t in ("pool2", "norm2", "conv3:pre", "conv3", "conv4:pre", "conv4")},
    **{t: 100.0 for t in ("conv5:pre", "conv5", "pool5", "fc6:pre", "fc6", "fc7:pre", "fc7", "fc8", "prob")},
}
# The published per-channel ImageNet std (0.229, 0.224, 0.225) on the 0-255 scale, averaged: a stand-in
# for their x0_sigma file (the average norm of mean-subtracted images), which is not redistributed.
IMAGENET_PIXEL_STD = 57.4


class _MomentumState(NamedTuple):
    count: jax.Array
    trace: jax.Array


def momentum_with_resets(learning_rates: Sequence[float], momentum: float = 0.9) -> optax.GradientTransformation:
    """Heavy-ball descent with a per-step lr table; the momentum restarts whenever the lr changes.

    ``m = momentum m - lr g; x += m`` (Mahendran & Vedaldi's ``invert_nn.m``), ``m`` zeroed at each lr
    switch so the old velocity does not overshoot; steps past the table keep its last lr.
    """
    rates = jnp.asarray(learning_rates, jnp.float32)

    def init(params: jax.Array) -> _MomentumState:
        return _MomentumState(jnp.zeros((), jnp.int32), jnp.zeros_like(params))

    def update(updates, state: _MomentumState, params=None):
        del params
        last = rates.shape[0] - 1
        lr = rates[jnp.minimum(state.count, last)]
        prev = rates[jnp.clip(state.count - 1, 0, last)]
        restart = (state.count == 0) | (lr != prev)
        trace = jnp.where(restart, jnp.zeros_like(state.trace), momentum * state.trace) + updates
        return -lr * trace, _MomentumState(state.count + 1, trace)
    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class NormalizedNoise:
    """Gaussian noise images rescaled to Euclidean norm ``norm`` each (Mahendran & Vedaldi's start)."""

    shape: tuple[int, int, int]
    norm: float
    is_code: bool = False

    def init(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` starting images of norm ``self.norm``."""
        x = jax.random.normal(key, (n, *self.shape), jnp.float32)
        return x * (self.norm / jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2, 3), keepdims=True)))

    def render(self, aux_params: Any, z: jax.Array) -> jax.Array:
        """The pixels are the image."""
        return z


def mv_learning_rates(steps: int, lr: float) -> list[float]:
    """Their schedule ``lr x [1, 0.1, 0.01]`` over the first quarter, middle half and last quarter of ``steps``."""
    a, b = steps // 4, steps // 4 + steps // 2
    return [lr * (1.0 if i < a else 0.1 if i < b else 0.01) for i in range(steps)]


def mahendran_vedaldi(layer: str, reference_features: Any, image_shape: Sequence[int], alpha: float = 6.0,
                      beta: float = 2.0, lambda_alpha: float = 8e-10, lambda_tv: float | None = None,
                      steps: int = 400, lr: float = 0.004, momentum: float = 0.9,
                      x0_sigma: float | None = None, jitter: int = 0) -> Preset:
    """Regularized inversion of ``layer`` (Mahendran & Vedaldi, CVPR 2015) with their public code's constants.

    Minimizes ``||phi(x) - phi0||^2 / ||phi0||^2 + (lambda_tv/2 TV_beta(x) + lambda_alpha/2 ||x||_alpha^alpha)
    / x0_sigma^2`` by momentum 0.9 with steps ``lr x0_sigma^2 x [1, 0.1, 0.01]`` (100/200/100 of 400) and
    the momentum reset at each lr switch; start: noise of norm ``x0_sigma``. Constants from
    ``experiment_cnn.m``: alpha 6, lambda_alpha 8e-10, beta 2, lambda_tv 1 / 10 / 100 by depth
    (``MV_LAMBDA_TV``), lr 0.004, in Caffe space. ``x0_sigma`` (the average norm of mean-subtracted
    images) defaults to ``57.4 sqrt(H W C)``, an estimate from the published ImageNet pixel std, since
    their measured value is not available. The preset's target is ``reference_features`` (phi(x0) with
    its batch axis); ``jitter`` > 0 shifts the image randomly by up to that many pixels each step
    (their later IJCV version; the CVPR code has none). The TV is ``priors.tv``: interior differences
    only, where their code also counts the last row/column with a replicated edge.
    """
    shape = tuple(int(d) for d in image_shape)
    sigma = float(IMAGENET_PIXEL_STD * np.sqrt(np.prod(shape))) if x0_sigma is None else float(x0_sigma)
    if lambda_tv is None:
        if layer not in MV_LAMBDA_TV:
            raise ValueError(f"no published lambda_tv for layer {layer!r}; pass lambda_tv")
        lambda_tv = MV_LAMBDA_TV[layer]
    scale = 1.0 / (2.0 * sigma ** 2)
    objective = (feature_inversion(layer) - (lambda_alpha * scale) * priors.alpha_norm(alpha)
                 - (lambda_tv * scale) * priors.tv(beta))
    method = Method(steps, momentum_with_resets([r * sigma ** 2 for r in mv_learning_rates(steps, lr)], momentum),
                    transform=T.jitter(jitter) if jitter > 0 else None, name="mahendran_vedaldi")
    return Preset(NormalizedNoise(shape, sigma), method, objective=objective,
                  target=jnp.asarray(reference_features, jnp.float32), name="mahendran_vedaldi")


# ----- generator inversion -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _inversion(classifier_module: Any, generator_module: Any, encoder_layer: str) -> Callable:
    net = module_apply(classifier_module)
    gen = module_apply(generator_module)

    def run(classifier_params: Any, generator_params: Any, images: jax.Array) -> jax.Array:
        code = net(classifier_params, images, (encoder_layer,))[encoder_layer]
        return crop_to_classifier(gen(generator_params, code, ("deconv0",))["deconv0"], generator_module.config)
    return jax.jit(run)


def generator_inversion(classifier: Any, generator: Any, images: Any, encoder_layer: str = "fc6") -> jax.Array:
    """``crop(G(E(x0)))`` for NHWC ``images`` in one compiled forward pass (the UpconvNet inversion)."""
    x = jnp.asarray(images, jnp.float32)
    if x.ndim == 3:
        x = x[None]
    code_shape = jax.eval_shape(lambda p, v: classifier.apply(p, v, (encoder_layer,)), classifier.params, x)
    width = code_shape[encoder_layer].shape[1:]
    if width != (generator.config.code_size,):
        raise ValueError(f"the classifier's {encoder_layer!r} has shape {width}; the generator takes codes of "
                         f"{generator.config.code_size}")
    return _inversion(classifier.module, generator.module, encoder_layer)(classifier.params, generator.params, x)


__all__ = [
    "Preset", "dgn_am", "generator_code_bounds", "linear_schedule", "ppgn_sampler", "ppgn_prior",
    "ppgn_condition", "sampler_noise_key", "add_gaussian_noise", "yosinski2015", "YosinskiSetting",
    "YOSINSKI_2015", "progress_gradient_ascent", "yosinski_operator", "BoundedPixels", "mahendran_vedaldi",
    "MV_LAMBDA_TV", "IMAGENET_PIXEL_STD", "momentum_with_resets", "mv_learning_rates", "NormalizedNoise",
    "generator_inversion",
]
