"""Networks built from a Caffe deploy prototxt (a ``NetSpec``) instead of written out as modules.

``build_network(spec)`` (``build``) turns every layer into a small pure function (``builders``) and
infers all blob shapes once, at build time; the result is a ``PrototxtNet`` (``graph``) whose
``apply(params, x, taps)`` is pure. ``params_from_blobs(spec)`` (``blobs``) converts the Caffe blobs to
the parameter layouts of ``jaxviz.models.modules``; ``from_caffe(prototxt, caffemodel)`` and
``load_caffe`` (``load``) do both in one call. Blobs are held NHWC (``axes``).
"""

from weights_convert.network.axes import caffe_reshape
from weights_convert.network.blobs import params_from_blobs
from weights_convert.network.build import build_network, is_training_only
from weights_convert.network.builders import LAYER_BUILDERS
from weights_convert.network.depthwise import depthwise_conv2d
from weights_convert.network.graph import PrototxtNet
from weights_convert.network.load import from_caffe, load_caffe

__all__ = ["LAYER_BUILDERS", "PrototxtNet", "build_network", "caffe_reshape", "depthwise_conv2d", "from_caffe",
           "is_training_only", "load_caffe", "params_from_blobs"]
