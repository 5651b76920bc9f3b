"""PyTorch twins of jaxviz's CaffeNet and fc6 generator, for side-by-side timing (same weights, same math).

The modules mirror the Caffe layer tables (BVLC reference CaffeNet; DeePSiM fc6 generator) in NCHW, the
layout PyTorch's CPU kernels (oneDNN) are built for. ``caffenet_from_jaxviz`` / ``generator_from_jaxviz``
copy the weights of a jaxviz parameter tree into them, undoing jaxviz's layouts:

- convolution kernels: HWIO -> OIHW;
- inner products: jaxviz's (in, out) kernel with rows in H, W, C flatten order -> (out, in) in C, H, W order;
- deconvolutions: jaxviz keeps the flipped forward-convolution kernel (kh, kw, I, O); PyTorch's
  ``ConvTranspose2d`` takes Caffe's own blob (I, O, kh, kw);
- the generator's defc5: jaxviz computes its outputs in H, W, C order (folded into the kernel columns), PyTorch
  reshapes C, H, W as Caffe does.

``check_equal`` runs both networks on one input and returns the largest relative difference, so a benchmark
can state that it compares like with like. Importing this module needs torch (the ``bench`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxviz.models import CaffeNetConfig, GeneratorConfig


class TorchCaffeNet(nn.Module):
    """CaffeNet to fc8 (conv/ReLU/pool/LRN, grouped conv2/4/5, Caffe's ceil-rounded max pooling)."""

    def __init__(self, cfg: CaffeNetConfig = CaffeNetConfig()):
        super().__init__()
        self.cfg = cfg
        c_in = cfg.in_channels
        self.convs = nn.ModuleList()
        for spec in cfg.convs:
            self.convs.append(nn.Conv2d(c_in, spec.features, spec.kernel, spec.stride, spec.pad, groups=spec.group))
            c_in = spec.features
        from jaxviz.models.caffenet import caffenet_tap_shapes
        pool5 = caffenet_tap_shapes(cfg)["pool5"]
        self.fc6 = nn.Linear(int(np.prod(pool5)), cfg.fc[0])
        self.fc7 = nn.Linear(cfg.fc[0], cfg.fc[1])
        self.fc8 = nn.Linear(cfg.fc[1], cfg.fc[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        k, s = cfg.pool_kernel, cfg.pool_stride

        def lrn(h):
            return F.local_response_norm(h, cfg.lrn_local_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k)

        h = F.relu(self.convs[0](x))
        h = lrn(F.max_pool2d(h, k, s, ceil_mode=True))
        h = F.relu(self.convs[1](h))
        h = lrn(F.max_pool2d(h, k, s, ceil_mode=True))
        h = F.relu(self.convs[2](h))
        h = F.relu(self.convs[3](h))
        h = F.relu(self.convs[4](h))
        h = F.max_pool2d(h, k, s, ceil_mode=True).flatten(1)
        h = F.relu(self.fc6(h))
        h = F.relu(self.fc7(h))
        return self.fc8(h)


class TorchGenerator(nn.Module):
    """The DeePSiM fc6 generator: three leaky fc layers, reshape C, H, W, nine deconvolutions (last linear)."""

    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.cfg = cfg
        widths = (cfg.code_size, *cfg.fc)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        c_in = cfg.reshape[0]
        self.deconvs = nn.ModuleList()
        for spec in cfg.deconvs:
            self.deconvs.append(nn.ConvTranspose2d(c_in, spec.features, spec.kernel, spec.stride, spec.pad))
            c_in = spec.features

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        slope = self.cfg.negative_slope
        h = code
        for fc in self.fcs:
            h = F.leaky_relu(fc(h), slope)
        h = h.view(h.shape[0], *self.cfg.reshape)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = F.leaky_relu(h, slope)
        return h


def _t(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, np.float32, copy=True, order="C"))


def _dense_chw_rows(kernel: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """(in, out) kernel whose rows are in H, W, C order -> PyTorch's (out, in) weight with C, H, W columns."""
    h, w, c = hwc
    k = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return k.T


def caffenet_from_jaxviz(params: Any, cfg: CaffeNetConfig = CaffeNetConfig()) -> TorchCaffeNet:
    """A ``TorchCaffeNet`` holding the weights of jaxviz CaffeNet ``params``."""
    from jaxviz.models.caffenet import caffenet_tap_shapes
    net = TorchCaffeNet(cfg)
    with torch.no_grad():
        for i, conv in enumerate(net.convs, 1):
            p = params[f"conv{i}"]
            conv.weight.copy_(_t(np.asarray(p["kernel"]).transpose(3, 2, 0, 1)))
            conv.bias.copy_(_t(p["bias"]))
        pool5 = caffenet_tap_shapes(cfg)["pool5"]
        net.fc6.weight.copy_(_t(_dense_chw_rows(np.asarray(params["fc6"]["kernel"]), pool5)))
        for name in ("fc6", "fc7", "fc8"):
            layer = getattr(net, name)
            if name != "fc6":
                layer.weight.copy_(_t(np.asarray(params[name]["kernel"]).T))
            layer.bias.copy_(_t(params[name]["bias"]))
    return net.eval().requires_grad_(False)


def generator_from_jaxviz(params: Any, cfg: GeneratorConfig = GeneratorConfig()) -> TorchGenerator:
    """A ``TorchGenerator`` holding the weights of jaxviz generator ``params``."""
    from jaxviz.models.generator import DECONV_LAYERS, FC_LAYERS
    net = TorchGenerator(cfg)
    c, h, w = cfg.reshape
    with torch.no_grad():
        for name, fc in zip(FC_LAYERS, net.fcs):
            k, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
            if name == "defc5":  # jaxviz's columns are in H, W, C order; Caffe's (and PyTorch's view) C, H, W
                k = k.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(k.shape[0], -1)
                b = b.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            fc.weight.copy_(_t(k.T))
            fc.bias.copy_(_t(b))
        for name, deconv in zip(DECONV_LAYERS, net.deconvs):
            k = np.asarray(params[name]["kernel"])              # (kh, kw, I, O), flipped
            deconv.weight.copy_(_t(k[::-1, ::-1].transpose(2, 3, 0, 1)))
            deconv.bias.copy_(_t(params[name]["bias"]))
    return net.eval().requires_grad_(False)


def nhwc_to_nchw(x: Any) -> torch.Tensor:
    """A jaxviz NHWC batch as a contiguous NCHW tensor."""
    return _t(np.asarray(x).transpose(0, 3, 1, 2))


def relative_difference(a: Any, b: Any) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


__all__ = ["TorchCaffeNet", "TorchGenerator", "caffenet_from_jaxviz", "generator_from_jaxviz", "nhwc_to_nchw",
           "relative_difference"]
