"""weights_convert: Caffe files (``.prototxt``, ``.caffemodel``) read and turned into jaxviz models.

The layer above ``jaxviz``: it imports ``jaxviz.models``, never the other way round.
``load_caffe`` / ``from_caffe`` run any supported Caffe network from its deploy prototxt
(``weights_convert.network``); ``python -m weights_convert`` converts CaffeNet and the fc6 generator
into jaxviz model folders (``weights_convert.convert``).
"""

from weights_convert.network import PrototxtNet, build_network, from_caffe, load_caffe, params_from_blobs

__all__ = ["PrototxtNet", "build_network", "from_caffe", "load_caffe", "params_from_blobs"]
