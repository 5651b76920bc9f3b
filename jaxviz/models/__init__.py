"""Networks: explicit CaffeNet and fc6 generator modules, prototxt-built networks, ``load`` and ``load_caffe``."""

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig, caffenet_tap_names
from jaxviz.models.generator import Generator, GeneratorConfig, crop_to_classifier, generator_tap_names
from jaxviz.models.from_prototxt import PrototxtNet, from_caffe
from jaxviz.models.zoo import Model, load, load_caffe

__all__ = ["CaffeNet", "CaffeNetConfig", "Generator", "GeneratorConfig", "Model", "caffenet_tap_names",
           "crop_to_classifier", "from_caffe", "generator_tap_names", "load", "load_caffe", "PrototxtNet"]
