"""Robustness transforms applied to the image before each forward pass: pure functions of a PRNG key.

A ``Transform`` maps ``(key, images NHWC) -> images NHWC`` of the same shape (fixed-size networks such as
CaffeNet cannot take another size), differentiable with respect to the images. The random ones here are
``RandomTransform``s, which also split drawing their values from using them, so the loop draws every
step's values once, at the start of a run (``draw``, ``apply_drawn``).

Lucid's transforms change the image size (pad, crop-jitter, resize) and rely on a size-agnostic network.
Here every transform keeps the size, so the geometry is done by resampling in place:

- Each image of a batch draws its own shift, scale or angle: the images of a run are independent
  optimizations, and one shared draw would correlate them.
- Samples that fall outside the image are filled by mirror reflection about the edge pixel (numpy's
  ``"reflect"``, scipy's ``"mirror"``: ``c b | a b c``). Reflection invents no new colour and no flat band, so
  the borders carry no constant the network could learn to exploit; in Caffe space a constant fill of 0
  would be the mean colour instead (that is what ``pad`` does, on purpose).
- Scaling and rotation are bilinear, about the image centre ``((H-1)/2, (W-1)/2)``, so an identity
  parameter reproduces the input exactly: ``jax.scipy.ndimage.map_coordinates`` with order 1 in
  ``affine_about_center``; in the random transforms the same values through ``jaxviz.core.resample``,
  whose gradient gathers where map_coordinates' scatters (a batch of 8 CaffeNet-sized images: scale or
  rotation forward and backward 70 -> 14 ms on a 2-core CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from jaxviz.core.objectives import require_image
from jaxviz.core.resample import Reach, affine_resample, reach_of, resample_fits

Transform = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RandomTransform:
    """A ``Transform`` whose random values are drawn apart from their use: ``t(key, x)`` is
    ``t.apply(t.draw(key, len(x)), x)``.

    Why: a run's step is compiled once but every hash in it is a kernel that XLA:CPU compiles anew (the
    seven of ``recipes.lucid``'s step took a quarter of its compile time), so the loop draws every step's
    values in the run's initial state, a program compiled for speed of compiling, and the step only applies
    them. Keep the draws small (shifts, matrices): the loop holds them for every step of a run.
    """

    draw: Callable[[jax.Array, int], Any]          # (key, n images) -> this transform's values, a pytree
    apply: Callable[[Any, jax.Array], jax.Array]   # (those values, images NHWC) -> images NHWC

    def __call__(self, key: jax.Array, x: jax.Array) -> jax.Array:
        # A scalar is no batch of images: ``apply`` says so, naming the transform.
        return self.apply(self.draw(key, x.shape[0] if jnp.ndim(x) else 1), x)


def draw(transform: Transform, key: jax.Array, n: int) -> Any:
    """The random values ``transform`` uses with ``key`` on ``n`` images: a ``RandomTransform``'s draws, or
    ``key`` itself for a plain function, which draws as it applies."""
    return transform.draw(key, n) if isinstance(transform, RandomTransform) else key


def apply_drawn(transform: Transform, drawn: Any, x: jax.Array) -> jax.Array:
    """``transform`` applied with values from ``draw``: ``apply_drawn(t, draw(t, key, len(x)), x) == t(key, x)``."""
    return transform.apply(drawn, x) if isinstance(transform, RandomTransform) else transform(drawn, x)


def compose(*transforms: Transform) -> RandomTransform:
    """Apply ``transforms`` in order, each with its own key."""
    def draw_each(key: jax.Array, n: int) -> tuple:
        keys = jax.random.split(key, max(len(transforms), 1))
        return tuple(draw(t, k, n) for t, k in zip(transforms, keys))

    def apply_each(drawn: tuple, x: jax.Array) -> jax.Array:
        for t, d in zip(transforms, drawn):
            x = apply_drawn(t, d, x)
        return x
    return RandomTransform(draw_each, apply_each)


def uniform_index(key: jax.Array, n: int, shape: Sequence[int]) -> jax.Array:
    """Integers drawn uniformly from ``range(n)``, from one uniform float draw per integer.

    ``jax.random.randint`` (and ``choice``, which calls it) hashes three times per draw to stay unbiased for
    any range; for the few options a transform has, one float draw is as good (a bias of order n / 2^24)
    and compiles in half the time on XLA:CPU, where LLVM optimizes every hash anew (a (2, 1) draw vmapped
    over 8 runs, on a 2-core CPU: 0.48 s -> 0.25 s).
    """
    u = jax.random.uniform(key, tuple(shape))
    return jnp.minimum((u * n).astype(jnp.int32), n - 1)


# ----- jitter -----------------------------------------------------------------------------------------

def shift(x: jax.Array, dy: jax.Array, dx: jax.Array, max_shift: int) -> jax.Array:
    """Shift each image by integer ``(dy[n], dx[n])`` (|d| <= max_shift), borders filled by reflection."""
    require_image(x, "shift")
    n, h, w, c = x.shape
    m = int(max_shift)
    # Pad once by the largest shift, then cut each image's window: output[i] = input[i - d].
    xp = jnp.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode="reflect")

    def one(image: jax.Array, oy: jax.Array, ox: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (m - oy, m - ox, 0), (h, w, c))
    return jax.vmap(one)(xp, jnp.asarray(dy, jnp.int32), jnp.asarray(dx, jnp.int32))


def _require_shift_fits(max_shift: int, x: jax.Array) -> None:
    if max_shift >= min(x.shape[1:3]):
        raise ValueError(f"jitter of {max_shift} pixels does not fit images of size {x.shape[1:3]}")


def _draw_shifts(key: jax.Array, max_shift: int, n: int) -> jax.Array:
    """(2, n) integer shifts in ``[-max_shift, max_shift]``: rows, then columns."""
    return uniform_index(key, 2 * max_shift + 1, (2, n)) - max_shift


def jitter(max_shift: int) -> RandomTransform:
    """Shift each image by a random integer offset in ``[-max_shift, max_shift]`` per axis (reflected borders)."""
    if max_shift < 0:
        raise ValueError(f"jitter needs max_shift >= 0, got {max_shift}")

    def draw_shifts(key: jax.Array, n: int) -> jax.Array:
        return _draw_shifts(key, max_shift, n) if max_shift else jnp.zeros((2, n), jnp.int32)

    def apply(d: jax.Array, x: jax.Array) -> jax.Array:
        require_image(x, "jitter")
        if max_shift == 0:
            return x
        _require_shift_fits(max_shift, x)
        return shift(x, d[0], d[1], max_shift)
    return RandomTransform(draw_shifts, apply)


# ----- affine resampling about the centre -------------------------------------------------------------

def affine_about_center(x: jax.Array, matrices: jax.Array, mode: str = "mirror", cval: float = 0.0,
                        offsets: jax.Array | None = None) -> jax.Array:
    """Bilinear resampling of each image: output pixel ``p`` reads input ``c + M[n] (p - c) + t[n]``, ``c``
    the centre.

    ``matrices`` is (N, 2, 2) and ``offsets`` ``t`` (N, 2; zeros if None) in (row, col) coordinates;
    ``mode`` is map_coordinates' border mode.
    """
    require_image(x, "affine_about_center")
    n, h, w, c = x.shape
    centre = jnp.asarray([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    grid = jnp.stack([rows, cols]) - centre[:, None, None]          # (2, H, W)
    offsets = jnp.zeros((n, 2), jnp.float32) if offsets is None else jnp.asarray(offsets, jnp.float32)

    def one(image: jax.Array, m: jax.Array, t: jax.Array) -> jax.Array:
        src = jnp.einsum("ij,jhw->ihw", m.astype(jnp.float32), grid) + (centre + t)[:, None, None]
        sample = lambda channel: map_coordinates(channel, [src[0], src[1]], order=1, mode=mode, cval=cval)
        return jax.vmap(sample, in_axes=2, out_axes=2)(image)
    return jax.vmap(one)(x, matrices, offsets)


def _resample(x: jax.Array, matrices: jax.Array, reach: Reach, offsets: jax.Array | None = None) -> jax.Array:
    """``affine_about_center`` with the gathered adjoint of ``affine_resample`` where its mirrored border
    fits the image (every size Lucid's chain meets); map_coordinates, whose gradient scatters, elsewhere."""
    require_image(x, "resample")
    if resample_fits(x.shape[1], x.shape[2], reach):
        return affine_resample(x, matrices, reach, offsets)
    return affine_about_center(x, matrices, offsets=offsets)


def _choose(key: jax.Array, options: Sequence[float], n: int) -> jax.Array:
    # Duplicates in ``options`` weight the draw, as Lucid's extra zeros in its angle list do.
    return jnp.asarray(options, jnp.float32)[uniform_index(key, len(options), (n,))]


def scale_matrices(scales: jax.Array) -> jax.Array:
    """(N, 2, 2) matrices of a zoom by ``scales`` (> 1 enlarges the content)."""
    inv = 1.0 / scales
    return inv[:, None, None] * jnp.eye(2, dtype=jnp.float32)


def rotation_matrices(degrees: jax.Array) -> jax.Array:
    """(N, 2, 2) matrices of a rotation by ``degrees``, counter-clockwise as displayed (rows down)."""
    # Content turned by +t reads the input at the point turned by -t; in (row, col) with rows pointing
    # down (the y axis flipped), that inverse rotation is [[cos, sin], [-sin, cos]].
    t = jnp.deg2rad(degrees)
    cos, sin = jnp.cos(t), jnp.sin(t)
    return jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)


def random_scale(scales: Sequence[float]) -> RandomTransform:
    """Zoom each image about its centre by one of ``scales`` (bilinear, same size, reflected borders)."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"random_scale needs positive scales, got {scales}")
    # Every matrix it can draw is known now: their bounds fix the resampling's margin and adjoint window.
    reach = reach_of(np.asarray(scale_matrices(jnp.asarray(scales, jnp.float32))))

    def draw_matrices(key: jax.Array, n: int) -> jax.Array:
        return scale_matrices(_choose(key, scales, n))

    def apply(matrices: jax.Array, x: jax.Array) -> jax.Array:
        return _resample(x, matrices, reach)
    return RandomTransform(draw_matrices, apply)


def random_rotate(degrees: Sequence[float]) -> RandomTransform:
    """Rotate each image about its centre by one of ``degrees`` (bilinear, same size, reflected borders)."""
    if not degrees:
        raise ValueError("random_rotate needs at least one angle")
    reach = reach_of(np.asarray(rotation_matrices(jnp.asarray(degrees, jnp.float32))))

    def draw_matrices(key: jax.Array, n: int) -> jax.Array:
        return rotation_matrices(_choose(key, degrees, n))

    def apply(matrices: jax.Array, x: jax.Array) -> jax.Array:
        return _resample(x, matrices, reach)
    return RandomTransform(draw_matrices, apply)


def random_affine(scales: Sequence[float], degrees: Sequence[float], shift_before: int = 0,
                  shift_after: int = 0) -> RandomTransform:
    """``jitter(shift_before)``, ``random_scale(scales)``, ``random_rotate(degrees)``, ``jitter(shift_after)``
    as one bilinear resampling of their composed map (reflected borders).

    The four draw as the chain does (the same keys, the same values), and the map they compose is affine:
    output ``p`` reads ``c + S R (p - c) - S R d_after - d_before``. So the image is sampled once instead of
    at each step. That differs from the chain in two places only: the image is interpolated once (the
    chain's scale and rotation each blur it a little), and a sample past the border is reflected once,
    where the chain reflects at each step. Compiled, it is one resampling's forward and adjoint instead of
    four steps' (fewer fusions for LLVM to compile, less work each step: ``recipes.lucid`` on CaffeNet,
    8 runs of 3 steps, three fresh processes each, on a 2-core Intel Xeon: first call 3.9-4.2 s -> 3.4-3.5 s,
    a second call 0.63 s -> 0.57-0.60 s).
    """
    if not scales or min(scales) <= 0:
        raise ValueError(f"random_affine needs positive scales, got {scales}")
    if not degrees:
        raise ValueError("random_affine needs at least one angle")
    if shift_before < 0 or shift_after < 0:
        raise ValueError(f"random_affine needs shifts >= 0, got {shift_before} and {shift_after}")
    s, a = np.asarray(scales, np.float32), np.asarray(degrees, np.float32)
    every = np.asarray(scale_matrices(jnp.asarray(np.repeat(s, len(a))))
                       @ rotation_matrices(jnp.asarray(np.tile(a, len(s)))))
    # |t| <= |S R| |d_after| + |d_before| per axis, the row sums of |S R| bounded by the forward reach.
    reach = reach_of(every, shift=reach_of(every).forward * shift_after + shift_before)

    def draw_map(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """(matrices (n, 2, 2), offsets (n, 2)) of the composed map."""
        # The keys and draws of ``compose(jitter, random_scale, random_rotate, jitter)``: the same maps.
        k_before, k_scale, k_angle, k_after = jax.random.split(key, 4)
        d_before = _draw_shifts(k_before, shift_before, n).T.astype(jnp.float32)
        d_after = _draw_shifts(k_after, shift_after, n).T.astype(jnp.float32)
        m = scale_matrices(_choose(k_scale, scales, n)) @ rotation_matrices(_choose(k_angle, degrees, n))
        return m, -jnp.einsum("nij,nj->ni", m, d_after) - d_before

    def apply(drawn: tuple[jax.Array, jax.Array], x: jax.Array) -> jax.Array:
        require_image(x, "random_affine")
        _require_shift_fits(max(shift_before, shift_after), x)
        m, offsets = drawn
        return _resample(x, m, reach, offsets)
    return RandomTransform(draw_map, apply)


# ----- pad --------------------------------------------------------------------------------------------

def pad(width: int, value: float = 0.0) -> Transform:
    """Lucid's ``pad`` kept to the input size: the image is shrunk into the centre, framed by ``value``.

    Lucid pads the image and lets the network take the larger input, so the network sees the whole
    image plus a constant frame that the later jitter, scale and rotation move around. A fixed-size
    network cannot take the larger input; shrinking the content by ``(H - 2 width) / H`` (bilinear,
    antialiased) keeps both the whole image and the frame in view, which is what the frame is for.
    ``value`` 0.0 is the mean colour in Caffe space (Lucid's frame is 0.5 grey). The key is unused.
    """
    if width < 0:
        raise ValueError(f"pad needs width >= 0, got {width}")

    def apply(key: jax.Array, x: jax.Array) -> jax.Array:
        require_image(x, "pad")
        if width == 0:
            return x
        n, h, w, c = x.shape
        if 2 * width >= min(h, w):
            raise ValueError(f"a frame of {width} pixels leaves nothing of images of size {(h, w)}")
        inner = jax.image.resize(x, (n, h - 2 * width, w - 2 * width, c), method="linear")
        return jnp.pad(inner, ((0, 0), (width, width), (width, width), (0, 0)), constant_values=value)
    return apply


# ----- Lucid's default chain ----------------------------------------------------------------------------

LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
LUCID_ANGLES = tuple(float(a) for a in list(range(-10, 11)) + 5 * [0])


def standard_transforms(pad_width: int = 0, pad_value: float = 0.0) -> RandomTransform:
    """Lucid's default chain at fixed size: jitter 8, scale 0.9..1.1, rotate -10..10 (+5 zeros), jitter 4.

    The four are one resampling (``random_affine``): the same random maps, the image sampled once. Lucid
    starts with ``pad(12)``; here the frame is off by default because at fixed size it shrinks the
    content (see ``pad``): pass ``pad_width=12`` to have it.
    """
    geometry = random_affine(LUCID_SCALES, LUCID_ANGLES, shift_before=8, shift_after=4)
    return compose(pad(pad_width, pad_value), geometry) if pad_width else geometry


__all__ = [
    "Transform", "RandomTransform", "draw", "apply_drawn", "compose", "uniform_index", "shift", "jitter",
    "affine_about_center", "scale_matrices", "rotation_matrices", "random_scale", "random_rotate", "random_affine", "pad", "standard_transforms",
    "LUCID_SCALES", "LUCID_ANGLES",
]
