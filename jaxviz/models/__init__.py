"""Networks: the CaffeNet and fc6-generator Flax ports, ``Model``, ``load``, checkpoints and shipped data.

Networks built from any Caffe deploy prototxt live one layer up, in ``weights_convert.load_caffe``; a
network of your own (Flax linen or NNX, Equinox, a plain function) becomes a ``Model`` through ``user``.
"""

from jaxviz.models import checkpoint, preprocessing, shipped
from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig, caffenet_tap_names
from jaxviz.models.generator import Generator, GeneratorConfig, crop_to_classifier, generator_tap_names
from jaxviz.models.lenet import LeNet, LeNetConfig, lenet_tap_names
from jaxviz.models.model import Model, check_code_bounds, code_bounds, network_function
from jaxviz.models.user import UnknownTapError, from_equinox, from_flax, from_function, from_nnx
from jaxviz.models.zoo import load

__all__ = ["CaffeNet", "CaffeNetConfig", "Generator", "GeneratorConfig", "Model", "caffenet_tap_names",
           "check_code_bounds", "checkpoint", "code_bounds", "crop_to_classifier", "generator_tap_names", "load",
           "network_function", "preprocessing", "shipped", "LeNet", "LeNetConfig", "lenet_tap_names",
           "UnknownTapError", "from_equinox", "from_flax", "from_function", "from_nnx"]
