"""Networks: explicit CaffeNet and fc6 generator modules, prototxt-built networks, and ``load``."""

from jaxviz.models.caffenet import CaffeNet, CaffeNetConfig, caffenet_tap_names
from jaxviz.models.generator import Generator, GeneratorConfig, crop_to_classifier, generator_tap_names
from jaxviz.models.zoo import Model, load

__all__ = ["CaffeNet", "CaffeNetConfig", "Generator", "GeneratorConfig", "Model", "caffenet_tap_names",
           "crop_to_classifier", "generator_tap_names", "load"]
