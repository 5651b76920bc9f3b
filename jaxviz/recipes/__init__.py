"""Recipes: the seed papers' methods with their original settings, as ready-made ``Preset``s.

"Original" means what the authors' public code does, since that is what reproduces their figures
(``methods.md``); every departure from it is named in the constructor's docstring.

- ``dgn_am``: Nguyen et al. 2016, optimize the fc6 code of a generator.
- ``ppgn_sampler``: the PPGN-style Langevin sampler of the survey seed (eq. 11/13).
- ``yosinski2015``: the four hand-designed-prior settings of Yosinski et al. 2015, Table 1.
- ``mahendran_vedaldi``: regularized feature inversion with the public code's constants.
- ``generator_inversion``: ``x = crop(G(E(x0)))`` in one forward pass (the UpconvNet inversion).
- ``lucid``: the modern libraries' default (Fourier image, Adam, robustness transforms); ``cppn`` and
  ``pyramid``: Lucid's CPPN and Laplacian-pyramid images with Adam.
- ``maco``: Fel et al. 2023, a phase-only Fourier image with a natural-image magnitude.
- ``accentuation``: Hamblin et al. 2024, a Fourier image seeded at a real image and kept near it.

``registry`` names them for the CLI, sweeps and the demo.
"""

from jaxviz.recipes.accentuation import accentuation, proximity_to, seeded_fourier_for
from jaxviz.recipes.dgn_am import dgn_am
from jaxviz.recipes.generator import generator_code, generator_inversion, generator_render, reconstruct
from jaxviz.recipes.lucid import card_fields, cppn, cppn_for, fourier_image_for, lowres_for, lucid, pyramid, pyramid_for
from jaxviz.recipes.maco import digits_spectrum, maco, maco_image_for, power_law_spectrum
from jaxviz.recipes.mahendran_vedaldi import IMAGENET_PIXEL_STD, MV_LAMBDA_TV, mahendran_vedaldi, mv_learning_rates
from jaxviz.recipes.ppgn import ppgn_condition, ppgn_prior, ppgn_sampler
from jaxviz.recipes.preset import Preset
from jaxviz.recipes.registry import METHODS, MethodSpec, build, method_spec
from jaxviz.recipes.yosinski import READABLE, YOSINSKI_2015, YosinskiSetting, pixel_am, yosinski2015, yosinski_operator

__all__ = [
    "Preset", "dgn_am", "ppgn_sampler", "ppgn_prior", "ppgn_condition", "yosinski2015", "YosinskiSetting",
    "YOSINSKI_2015", "READABLE", "pixel_am", "yosinski_operator", "mahendran_vedaldi", "MV_LAMBDA_TV", "IMAGENET_PIXEL_STD",
    "mv_learning_rates", "lucid", "fourier_image_for", "generator_code", "generator_render",
    "generator_inversion", "reconstruct", "METHODS", "MethodSpec", "build", "method_spec",
    "card_fields", "cppn", "cppn_for", "pyramid", "pyramid_for", "lowres_for", "maco", "maco_image_for",
    "digits_spectrum", "power_law_spectrum", "accentuation", "proximity_to", "seeded_fourier_for",
]
