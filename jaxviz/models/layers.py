"""Caffe's layer arithmetic as pure JAX functions on NHWC arrays.

These are the few operations where Caffe differs from the usual deep-learning defaults (output sizes
rounded up in pooling, LRN's exact normalization, deconvolution as the adjoint of convolution), written
once and shared by the explicit CaffeNet / generator modules and the prototxt-built networks.

Where several forms compute the same layer (``FORMS``), the fastest is chosen by shape; a program traced
under ``core.plain_forms.plain_forms()`` (one that runs once) takes the plainest instead, one XLA operation.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxviz.core import relu_rules
from jaxviz.core.plain_forms import in_plain_forms
from jaxviz.core.relu_rules import RELU_RULES, relu_backward  # noqa: F401  (the layers' names for them)
from jaxviz.models.micro_batches import micro_batched, whole


def caffe_pool_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: ceil division, minus one if the last window would start inside the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(shape_hw: Sequence[int], kernel, stride, pad) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis so that VALID pooling yields Caffe's ceil-rounded size."""
    padding = []
    for size, k, s, p in zip(shape_hw, kernel, stride, pad):
        out = caffe_pool_output_size(size, k, s, p)
        after = (out - 1) * s + k - size - p
        padding.append((p, max(after, 0)))
    return padding


def max_pool(x: jax.Array, kernel: Sequence[int], stride: Sequence[int],
             pad: Sequence[int] = (0, 0), *, form: str | None = None) -> jax.Array:
    """Caffe MAX pooling of an NHWC array (output size rounded up; padding never wins the max).

    The gradient goes to the first maximum of each window in row-major order (Caffe's ``>`` scan, and what
    XLA's ``select_and_scatter`` gives for ``reduce_window`` max). ``form``: ``"select"`` (the default,
    ``POOL_FORM``) routes it through the recorded argmax with comparisons and selects
    (``max_pool_argmax``, ``max_pool_grad_from_argmax``); ``"xla"`` differentiates ``reduce_window``,
    whose gradient XLA:CPU runs through index arrays and a scatter (pool1 at batch 8: ~3x slower).
    The ``"select"`` form is a ``jax.custom_vjp``: reverse mode (``grad``, ``vjp``, also of a gradient) works,
    forward mode (``jvp``) needs ``form="xla"``.
    """
    padding = tuple(tuple(p) for p in _pool_padding(x.shape[1:3], kernel, stride, pad))
    form = form or ("xla" if in_plain_forms() else POOL_FORM)
    if form == "xla":
        return _max_pool_reference(x, tuple(kernel), tuple(stride), padding)
    if form != "select":
        raise ValueError(f"max_pool: unknown form {form!r}; forms: {', '.join(FORMS['max_pool'])}")
    return _max_pool(x, tuple(kernel), tuple(stride), padding)


def _max_pool_reference(x: jax.Array, kernel, stride, padding) -> jax.Array:
    """``reduce_window`` max over -inf padding: the forward pass, and the reference gradient (XLA's)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, kernel[0], kernel[1], 1),
                             (1, stride[0], stride[1], 1), ((0, 0), *padding, (0, 0)))


def _window_views(x: jax.Array, kernel, stride, padding, out_hw):
    """The k*k strided views of the -inf padded input, one per window offset in row-major order."""
    (sh, sw), (oh, ow) = stride, out_hw
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf) if any(map(any, padding)) else x
    return [lax.slice(xp, (0, dy, dx, 0), (xp.shape[0], dy + (oh - 1) * sh + 1, dx + (ow - 1) * sw + 1,
                                           xp.shape[3]), (1, sh, sw, 1))
            for dy in range(kernel[0]) for dx in range(kernel[1])]


def max_pool_argmax(x: jax.Array, y: jax.Array, kernel, stride, padding) -> jax.Array:
    """Per output element, the row-major window offset of the first input equal to the max (int8 or int32)."""
    views = _window_views(x, kernel, stride, padding, y.shape[1:3])
    dtype = jnp.int8 if len(views) < 128 else jnp.int32
    idx = jnp.full(y.shape, len(views) - 1, dtype)
    for k in range(len(views) - 2, -1, -1):   # walking back, the earliest hit is written last
        idx = jnp.where(views[k] == y, jnp.asarray(k, dtype), idx)
    return idx


def max_pool_grad_from_argmax(idx: jax.Array, g: jax.Array, in_hw, kernel, stride, padding) -> jax.Array:
    """The input gradient of max pooling from ``max_pool_argmax``: comparisons and selects, no scatter.

    Built per input phase (rows ``s*a + r``, columns ``s*b + c``): window offset ``dy = r + s*m`` of output
    row ``i`` lands on phase row ``a = i + m``, so each phase is a sum of shifted selects of the output
    gradient (each offset is evaluated once, on a phase-sized array), and the phases interleave by one
    stack and reshape.
    """
    (kh, kw), (sh, sw), (n, oh, ow, c) = kernel, stride, g.shape
    hp, wp = in_hw[0] + sum(padding[0]), in_hw[1] + sum(padding[1])
    qh, qw = -(-hp // sh), -(-wp // sw)
    zero = jnp.zeros((), g.dtype)
    rows = []
    for r in range(sh):
        cols = []
        for col in range(sw):
            total = None
            for dy in range(r, kh, sh):
                for dx in range(col, kw, sw):
                    mh, mw = (dy - r) // sh, (dx - col) // sw
                    part = jnp.where(idx == dy * kw + dx, g, zero)
                    part = lax.pad(part, zero, ((0, 0, 0), (mh, qh - oh - mh, 0), (mw, qw - ow - mw, 0), (0, 0, 0)))
                    total = part if total is None else total + part
            cols.append(jnp.zeros((n, qh, qw, c), g.dtype) if total is None else total)
        rows.append(jnp.stack(cols, axis=3))                 # (n, qh, qw, sw, c)
    full = jnp.stack(rows, axis=2).reshape(n, qh * sh, qw * sw, c)
    (pt, _), (pl, _) = padding
    return full[:, pt:pt + in_hw[0], pl:pl + in_hw[1]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, kernel, stride, padding):
    return _max_pool_reference(x, kernel, stride, padding)


def _max_pool_fwd(x, kernel, stride, padding):
    y = _max_pool_reference(x, kernel, stride, padding)
    # The argmax is computed once here (k*k comparisons) and kept as int8: without the barrier XLA would
    # fuse it into the backward pass's selects and recompute it there, once per window offset.
    idx = lax.optimization_barrier(max_pool_argmax(x, y, kernel, stride, padding))
    return y, (idx, jnp.zeros((x.shape[1], x.shape[2], 0), x.dtype))  # (the second: the input's H, W only)


def _max_pool_bwd(kernel, stride, padding, res, g):
    idx, hw = res
    return (max_pool_grad_from_argmax(idx, g, hw.shape[:2], kernel, stride, padding),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def ave_pool(x: jax.Array, kernel: Sequence[int], stride: Sequence[int],
             pad: Sequence[int] = (0, 0)) -> jax.Array:
    """Caffe AVE pooling: zero padding counts in the divisor, the ceil-rounding overhang does not."""
    (ph, pw) = _pool_padding(x.shape[1:3], kernel, stride, pad)
    window, strides = (1, kernel[0], kernel[1], 1), (1, stride[0], stride[1], 1)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, ((0, 0), ph, pw, (0, 0)))
    # Caffe's divisor is the window clipped to the padded extent [-pad, size + pad).
    ones = jnp.ones((1, x.shape[1] + 2 * pad[0], x.shape[2] + 2 * pad[1], 1), x.dtype)
    extra = ((0, 0), (0, max(ph[1] - pad[0], 0)), (0, max(pw[1] - pad[1], 0)), (0, 0))
    count = lax.reduce_window(jnp.pad(ones, extra), 0.0, lax.add, window, strides, "VALID")
    return total / count


def lrn_across_channels(x: jax.Array, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
    """Caffe LRN across channels: ``x * (k + alpha/n * sum_{window} x^2) ** -beta`` (zero-padded window)."""
    half = (local_size - 1) // 2
    sq = jnp.square(x)
    window_sum = lax.reduce_window(sq, 0.0, lax.add, (1, 1, 1, local_size), (1, 1, 1, 1),
                                   ((0, 0), (0, 0), (0, 0), (half, local_size - 1 - half)))
    return x * jnp.power(k + (alpha / local_size) * window_sum, -beta)


def lrn_within_channel(x: jax.Array, local_size: int = 5, alpha: float = 1.0,
                       beta: float = 0.75) -> jax.Array:
    """Caffe LRN within a channel: ``x * (1 + alpha * avepool_{n x n}(x^2)) ** -beta`` (zero-padded)."""
    half = (local_size - 1) // 2
    mean_sq = ave_pool(jnp.square(x), (local_size, local_size), (1, 1), (half, half))
    return x * jnp.power(1.0 + alpha * mean_sq, -beta)


FORMS = {"conv": ("direct", "split", "im2col", "s2d", "s2d_im2col", "direct_s2d_grad"),
         "deconv": ("direct", "phases", "phases_im2col"),
         "max_pool": ("select", "xla"),
         "dense": ("dot", "conv")}
"""The layer forms ``conv2d`` / ``deconv2d`` / ``dense`` accept as ``form=``: the same sums, scheduled
differently."""

CONV1_FORM = "direct_s2d_grad"
POOL_FORM = "select"
"""The forms of strided convolutions on CPU (CaffeNet's conv1) and of max pooling's gradient; see
benchmarks/form_ablation.py and benchmarks/README.md for the measurements behind them."""


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: Sequence[int] = (1, 1),
           pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1, *,
           form: str | None = None) -> jax.Array:
    """Caffe Convolution on NHWC with an HWIO kernel of shape (kh, kw, C_in / groups, C_out).

    ``form`` picks how XLA computes it (all give the same sums up to float reassociation); None chooses
    by shape (``conv_form``):

    - ``"direct"``: one ``conv_general_dilated`` (``feature_group_count`` for groups);
    - ``"split"``: one direct convolution per group, concatenated (XLA:CPU's grouped convolution is slow,
      its derivatives ~10x slower than the split form for CaffeNet's conv2);
    - ``"im2col"``: the k*k shifted (strided) views of the padded input side by side, one matmul per group;
    - ``"s2d"``: a strided convolution as space-to-depth (stride*stride phases into channels, the kernel
      zero-padded to a multiple of the stride) and a stride-1 convolution; ``"s2d_im2col"`` does that
      stride-1 convolution as im2col;
    - ``"direct_s2d_grad"``: the direct form forward, the ``"s2d"`` form's gradients (a ``custom_vjp``).

    On CPU, with the form chosen by shape, conv1-like and small-map layers run through
    ``models.micro_batches`` (cut into parts, or with the form chosen by the batch of all of ``vmap``'s
    runs): reverse mode only there; pass ``form=`` for ``jvp``.
    """
    y = _scheduled("conv", _conv2d_nobias, x, kernel, tuple(stride), tuple(pad), tuple(dilation), groups, form)
    return y if bias is None else y + bias


def _conv2d_nobias(x, kernel, stride, pad, dilation, groups, form):
    form = form or conv_form(x.shape, kernel.shape, stride, dilation, groups)
    if form == "direct_s2d_grad" and groups == 1 and dilation == (1, 1):
        y = _conv2d_direct_s2d_grad(x, kernel, stride, pad)
    elif form == "s2d" or form == "s2d_im2col":
        y = _conv2d_space_to_depth(x, kernel, stride, pad, groups,
                                   "im2col" if form == "s2d_im2col" else "direct")
    elif form == "im2col":
        y = _conv2d_im2col(x, kernel, stride, pad, dilation, groups)
    elif form == "split" and groups > 1:
        xs, ks = jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1)
        y = jnp.concatenate([_conv2d_direct(xg, kg, stride, pad, dilation, 1) for xg, kg in zip(xs, ks)],
                            axis=-1)
    elif form in ("direct", "split", "direct_s2d_grad"):
        y = _conv2d_direct(x, kernel, stride, pad, dilation, groups)
    else:
        raise ValueError(f"conv2d: unknown form {form!r}; forms: {', '.join(FORMS['conv'])}")
    return y


def _scheduled(kind, layer, x, kernel, stride, pad, dilation, groups, form):
    """``layer`` (a bias-free conv2d / deconv2d body), over parts of the batch where that is faster, and
    with its form chosen by the batch of all of ``vmap``'s runs where the best form depends on the batch."""
    if form is None and not in_plain_forms():
        body = functools.partial(layer, stride=stride, pad=pad, dilation=dilation, groups=groups, form=None)
        if in_micro_batches(kind, x.shape, kernel.shape, stride):
            return micro_batched(body)(x, kernel)
        if kind == "conv" and _form_depends_on_batch(x.shape, kernel.shape, stride, dilation, groups):
            return micro_batched(body, whole)(x, kernel)
    return layer(x, kernel, stride, pad, dilation, groups, form)


def in_micro_batches(kind: str, x_shape, kernel_shape, stride) -> bool:
    """Whether a ``conv2d`` / ``deconv2d`` with these shapes runs over parts of its batch
    (``models.micro_batches``): on XLA:CPU, for the layers it runs on one core, CaffeNet's conv1 (stride 4,
    3 channels) and the stride-2 deconvolutions of maps 32x32 and larger (the generator's deconv2, 1, 0)."""
    if jax.default_backend() != "cpu" or len(x_shape) != 4:
        return False
    if kind == "conv":
        return min(stride) >= 4 and kernel_shape[2] <= 4
    return max(stride) > 1 and min(x_shape[1], x_shape[2]) >= 32


def conv_form(x_shape, kernel_shape, stride, dilation=(1, 1), groups: int = 1) -> str:
    """The form ``conv2d`` uses for these shapes when none is asked for (measured on XLA:CPU, see
    benchmarks/README.md; other backends keep the forms jaxviz used before, per-group split for groups)."""
    if in_plain_forms():
        return "direct"
    if jax.default_backend() != "cpu":   # not measured off CPU: the forms jaxviz has always used there
        return "split" if 1 < groups <= 16 else "direct"
    if tuple(dilation) != (1, 1) or groups > 16:
        return "split" if 1 < groups <= 16 else "direct"
    if tuple(stride) != (1, 1):
        # conv1 (11x11, stride 4, 3 channels): XLA:CPU's direct form has the fastest forward, but its
        # gradient is slow; the space-to-depth form (a 3x3 stride-1 convolution over 48 channels)
        # differentiates fastest. CONV1_FORM combines them.
        return CONV1_FORM
    if _form_depends_on_batch(x_shape, kernel_shape, stride, dilation, groups) and (
            x_shape[0] * x_shape[1] * x_shape[2] <= IM2COL_MAX_ROWS):
        # small maps in small batches (CaffeNet's 13x13 conv3, the generator's 8x8 conv5_1, up to batch 6
        # and 16): one matmul beats XLA:CPU's convolution; on larger maps (16x16 and up), and on these in
        # larger batches, the direct convolution wins.
        return "im2col"
    return "split" if groups > 1 else "direct"


IM2COL_MAX_ROWS = 1024
"""The most output positions (batch x height x width) for which a small-map convolution runs as im2col on
CPU. Measured on a 2-core Intel Xeon, vjp ms im2col / direct: conv3 (13x13, 256 -> 384) at batch 4 (676
rows) 8.3 / 9.4, 8 (1352) 15.4 / 14.7, 32 (5408) 88 / 62; the generator's conv5_1 (8x8) at batch 8 (512)
8.5 / 10.2, 16 (1024) 16.2 / 15.7, 32 (2048) 42 / 32."""


def _form_depends_on_batch(x_shape, kernel_shape, stride, dilation=(1, 1), groups: int = 1) -> bool:
    """Whether ``conv_form`` picks im2col or the direct form by the batch: a stride-1 convolution on CPU
    with enough taps per output (>= 64) on a map of at most 200 positions."""
    if jax.default_backend() != "cpu" or len(x_shape) != 4:
        return False
    kh, kw, c_in_g, _ = kernel_shape
    return (tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1 and kh * kw * c_in_g >= 64
            and x_shape[1] * x_shape[2] <= 200)


def _conv2d_direct(x, kernel, stride, pad, dilation, groups):
    return lax.conv_general_dilated(
        x, kernel, window_strides=stride, padding=[(pad[0], pad[0]), (pad[1], pad[1])],
        rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv2d_im2col(x, kernel, stride, pad, dilation, groups):
    """Convolution as (shifted views side by side) @ (kernel as a matrix), per group.

    Patch columns are ordered (kernel row, kernel column, channel), the order of an HWIO kernel reshaped
    to (kh*kw*C_in, C_out); the gradient of the views is k*k strided placements, no scatter. (The matmul
    is a ``dot_general``: 1.5-2x faster on XLA:CPU than the same contraction as a 1x1 convolution.)
    """
    kh, kw, c_in_g, c_out = kernel.shape
    n, h, w, c = x.shape
    oh, ow = (_conv_out(h, kh, stride[0], pad[0], dilation[0]), _conv_out(w, kw, stride[1], pad[1], dilation[1]))
    xp = jnp.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0))) if any(pad) else x
    c_out_g = c_out // groups
    outs = []
    for g in range(groups):
        xg = xp if groups == 1 else xp[..., g * c_in_g:(g + 1) * c_in_g]
        views = [lax.slice(xg, (0, i * dilation[0], j * dilation[1], 0),
                           (n, i * dilation[0] + (oh - 1) * stride[0] + 1,
                            j * dilation[1] + (ow - 1) * stride[1] + 1, c_in_g), (1, stride[0], stride[1], 1))
                 for i in range(kh) for j in range(kw)]
        patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
        kg = kernel[..., g * c_out_g:(g + 1) * c_out_g].reshape(kh * kw * c_in_g, c_out_g)
        outs.append(lax.dot_general(patches, kg, (((3,), (0,)), ((), ()))))
    return outs[0] if groups == 1 else jnp.concatenate(outs, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_direct_s2d_grad(x, kernel, stride, pad):
    """Forward: the direct convolution (XLA:CPU's fastest forward for conv1); gradients: those of the
    space-to-depth form (its fastest backward). Both are the same linear map."""
    return _conv2d_direct(x, kernel, stride, pad, (1, 1), 1)


def _direct_s2d_fwd(x, kernel, stride, pad):
    return _conv2d_direct(x, kernel, stride, pad, (1, 1), 1), (x, kernel)


def _direct_s2d_bwd(stride, pad, res, g):
    x, kernel = res
    _, back = jax.vjp(lambda a, b: _conv2d_space_to_depth(a, b, stride, pad, 1, "direct"), x, kernel)
    return back(g)


_conv2d_direct_s2d_grad.defvjp(_direct_s2d_fwd, _direct_s2d_bwd)


def _conv2d_space_to_depth(x, kernel, stride, pad, groups, inner: str):
    """A stride-s convolution as a stride-1 one over s*s phases stacked as channels (exact: the kernel's
    added taps are zeros)."""
    if groups != 1:
        xs, ks = jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1)
        return jnp.concatenate([_conv2d_space_to_depth(a, b, stride, pad, 1, inner) for a, b in zip(xs, ks)],
                               axis=-1)
    (kh, kw, c_in, c_out), (sh, sw) = kernel.shape, stride
    n, h, w, _ = x.shape
    oh, ow = _conv_out(h, kh, sh, pad[0], 1), _conv_out(w, kw, sw, pad[1], 1)
    bh, bw = -(-kh // sh), -(-kw // sw)                       # kernel size in blocks
    eh, ew = (oh - 1 + bh) * sh, (ow - 1 + bw) * sw           # padded input extent the blocks cover
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pad[0], eh - h - pad[0], 0),
                                              (pad[1], ew - w - pad[1], 0), (0, 0, 0)))
    xs = xp.reshape(n, eh // sh, sh, ew // sw, sw, c_in).transpose(0, 1, 3, 2, 4, 5)
    xs = xs.reshape(n, eh // sh, ew // sw, sh * sw * c_in)
    kp = jnp.pad(kernel, ((0, bh * sh - kh), (0, bw * sw - kw), (0, 0), (0, 0)))
    ks = kp.reshape(bh, sh, bw, sw, c_in, c_out).transpose(0, 2, 1, 3, 4, 5).reshape(bh, bw, sh * sw * c_in, c_out)
    if inner == "im2col":
        return _conv2d_im2col(xs, ks, (1, 1), (0, 0), (1, 1), 1)
    return _conv2d_direct(xs, ks, (1, 1), (0, 0), (1, 1), 1)


def deconv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: Sequence[int] = (1, 1),
             pad: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1, *,
             form: str | None = None) -> jax.Array:
    """Caffe Deconvolution (the adjoint of Convolution) on NHWC.

    ``kernel`` is the equivalent *forward* convolution kernel, HWIO (kh, kw, C_in / groups, C_out),
    already spatially flipped: ``weights_convert.layouts.deconv_kernel`` makes it from Caffe's
    [C_in, C_out / groups, kh, kw] blob. Output size: ``stride * (in - 1) + dilation * (k - 1) + 1 - 2 * pad``.

    ``form`` (None: chosen by shape, ``deconv_form``): ``"direct"`` convolves the zero-dilated input
    (``lhs_dilation``); ``"phases"`` computes each of the stride*stride output phases as an ordinary
    convolution and interleaves them; ``"phases_im2col"`` does those convolutions as im2col matmuls.
    """
    y = _scheduled("deconv", _deconv2d_nobias, x, kernel, tuple(stride), tuple(pad), tuple(dilation), groups, form)
    return y if bias is None else y + bias


def _deconv2d_nobias(x, kernel, stride, pad, dilation, groups, form):
    form = form or deconv_form(x.shape, kernel.shape, stride, dilation, groups)
    kh, kw = kernel.shape[0], kernel.shape[1]
    if form.startswith("phases") and stride != (1, 1) and dilation == (1, 1):
        inner = "im2col" if form == "phases_im2col" else "direct"
        return _deconv2d_phases(x, kernel, stride, pad, groups, inner)
    if form not in FORMS["deconv"]:
        raise ValueError(f"deconv2d: unknown form {form!r}; forms: {', '.join(FORMS['deconv'])}")
    eff = [dilation[0] * (kh - 1), dilation[1] * (kw - 1)]
    padding = [(eff[0] - pad[0], eff[0] - pad[0]), (eff[1] - pad[1], eff[1] - pad[1])]
    if stride == (1, 1) and dilation == (1, 1) and form != "direct" and min(min(p) for p in padding) >= 0:
        # a stride-1 deconvolution is a convolution with the (already flipped) kernel
        return conv2d(x, kernel, None, (1, 1), (padding[0][0], padding[1][0]), (1, 1), groups)
    return lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=padding,
        lhs_dilation=stride, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def deconv_form(x_shape, kernel_shape, stride, dilation=(1, 1), groups: int = 1) -> str:
    """The form ``deconv2d`` uses for these shapes when none is asked for (measured on XLA:CPU)."""
    if in_plain_forms():
        return "direct"
    if tuple(stride) == (1, 1) or tuple(dilation) != (1, 1):
        return "direct" if jax.default_backend() != "cpu" else "phases"   # stride 1: conv2d's own choice
    if jax.default_backend() != "cpu":
        return "phases"
    if kernel_shape[-1] < 8:
        # deconv0 (32 -> 3 channels): each phase would be a convolution with 3 outputs, which XLA:CPU
        # runs far below the direct form's speed (its vjp 41 vs 20 ms at batch 8).
        return "direct"
    return "phases"


def _phase_taps(size: int, k: int, s: int, pad: int) -> list[tuple[int, int, int]]:
    """Per output phase r (rows s*q + r): (first kernel tap, low padding, high padding) of its stride-1 conv."""
    full_pad, out = k - 1 - pad, s * (size - 1) + k - 2 * pad
    q = -(-out // s)
    taps = []
    for r in range(s):
        k0 = (full_pad - r) % s
        m = len(range(k0, k, s))
        low = -((r + k0 - full_pad) // s)
        taps.append((k0, low, q + m - 1 - (size + low)))
    return taps


def _deconv2d_phases(x: jax.Array, kernel: jax.Array, stride: tuple[int, int], pad: Sequence[int],
                     groups: int, inner: str = "direct") -> jax.Array:
    """Strided deconvolution as stride*stride ordinary convolutions, one per output phase, interleaved.

    The same sums as convolving the zero-dilated input (``lhs_dilation``), without the multiplications by
    the inserted zeros: output row ``s*q + r`` only sees kernel rows ``k0(r)::s``. XLA:CPU runs (and
    differentiates) the dilated form about 4x slower, which dominated generator training and J_G^T g.
    """
    (kh, kw), (sh, sw) = kernel.shape[:2], stride
    n, h, w, _ = x.shape
    out_h, out_w = sh * (h - 1) + kh - 2 * pad[0], sw * (w - 1) + kw - 2 * pad[1]
    qh, qw = -(-out_h // sh), -(-out_w // sw)
    rows = []
    for k0h, lo_h, hi_h in _phase_taps(h, kh, sh, pad[0]):
        cols = []
        for k0w, lo_w, hi_w in _phase_taps(w, kw, sw, pad[1]):
            sub = kernel[k0h::sh, k0w::sw]
            if sub.shape[0] == 0 or sub.shape[1] == 0:  # kernel smaller than the stride: this phase is empty
                cols.append(jnp.zeros((n, qh, qw, kernel.shape[-1]), x.dtype))
                continue
            if inner == "im2col" and min(lo_h, hi_h, lo_w, hi_w) >= 0:
                xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
                cols.append(_conv2d_im2col(xp, sub, (1, 1), (0, 0), (1, 1), groups))
                continue
            cols.append(lax.conv_general_dilated(
                x, sub, window_strides=(1, 1), padding=[(lo_h, hi_h), (lo_w, hi_w)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups))
        rows.append(jnp.stack(cols, axis=3))                  # (n, qh, qw, sw, C)
    y = jnp.stack(rows, axis=2)                                # (n, qh, sh, qw, sw, C)
    return y.reshape(n, qh * sh, qw * sw, -1)[:, :out_h, :out_w]


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, form: str | None = None) -> jax.Array:
    """Caffe InnerProduct on a batch of flat inputs: ``x @ kernel + bias``, x (batch, in), kernel (in, out).

    ``form`` (None: chosen by the batch, ``dense_form``): ``"dot"`` is the matmul; ``"conv"`` computes the
    forward pass as a 1x1 convolution and the input gradient as ``g @ kernel.T`` (a ``custom_vjp``). On
    CPU the form is chosen by the batch of all of ``vmap``'s runs (``models.micro_batches``): reverse mode
    only there; pass ``form=`` for ``jvp``.
    """
    if form is None and _dense_form_depends_on_batch(x.shape) and not in_plain_forms():
        y = micro_batched(functools.partial(_dense_nobias, form=None), whole)(x, kernel)
    else:
        y = _dense_nobias(x, kernel, form)
    return y if bias is None else y + bias


def _dense_nobias(x, kernel, form):
    form = form or dense_form(x.shape)
    if form == "conv":
        return _dense_as_conv(x, kernel)
    if form == "dot":
        return x @ kernel
    raise ValueError(f"dense: unknown form {form!r}; forms: {', '.join(FORMS['dense'])}")


def dense_form(x_shape) -> str:
    """The form ``dense`` uses for an input of this shape when none is asked for (measured on XLA:CPU)."""
    if in_plain_forms():
        return "dot"
    if _dense_form_depends_on_batch(x_shape) and x_shape[0] >= DENSE_CONV_MIN_ROWS:
        # XLA:CPU's YNNPACK (a run's step keeps it for the dots, see core.loop.step_options) runs
        # x @ W at 8 rows and more at up to half the speed of Eigen's 1x1 convolution on an Intel Xeon
        # (level on an AMD EPYC); its g @ W.T is fast on both.
        return "conv"
    return "dot"


DENSE_CONV_MIN_ROWS = 8
"""The fewest rows (batch) for which ``dense`` runs its forward pass as a 1x1 convolution on CPU. Measured
on a 2-core Intel Xeon, fc6 (9216 -> 4096) forward + input gradient ms, 1x1 form / matmul: 32 rows 31.8 /
49.0, 8 rows 25.6 / 26.0, 1 row 15 / 10 (its input gradient ``g @ kernel.T`` is slow on a single row); on
a 2-core AMD EPYC the two forms are level from 8 rows and the 1x1 form 7x slower at one row."""


def _dense_form_depends_on_batch(x_shape) -> bool:
    return jax.default_backend() == "cpu" and len(x_shape) == 2


def _conv1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
    y = lax.conv_general_dilated(x[:, None, None, :], kernel[None, None], (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y[:, 0, 0, :]


@jax.custom_vjp
def _dense_as_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv1x1(x, kernel)


def _dense_as_conv_fwd(x, kernel):
    return _conv1x1(x, kernel), (x, kernel)


def _dense_as_conv_bwd(res, g):
    x, kernel = res
    return g @ kernel.T, x.T @ g


_dense_as_conv.defvjp(_dense_as_conv_fwd, _dense_as_conv_bwd)


def leaky_relu(x: jax.Array, negative_slope: float = 0.0) -> jax.Array:
    """Caffe ReLU with ``negative_slope`` (0 gives the plain rectifier).

    Inside ``relu_backward(rule)`` its backward pass follows ``rule`` (see ``RELU_RULES``); the rule is read
    when the function is traced, and it is part of every ``jax.jit`` cache key.
    """
    rule = relu_rules.current()
    if rule is not None:
        return relu_rules.ruled_relu(rule)(x, float(negative_slope))
    if negative_slope == 0.0:
        return jnp.maximum(x, 0.0)
    return jnp.where(x > 0, x, negative_slope * x)


def flatten_nhwc(x: jax.Array) -> jax.Array:
    """Flatten all but the batch axis in H, W, C order (inner-product weights are reordered to match)."""
    return x.reshape(x.shape[0], -1)
