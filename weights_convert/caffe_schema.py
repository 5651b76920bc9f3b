"""The part of caffe.proto (BVLC/caffe ``src/caffe/proto/caffe.proto``) that jaxviz reads and writes.

Each message schema maps a field number to ``(name, kind, sub)``: ``kind`` is one of ``str``, ``i64``
(int32/int64, signed), ``u64`` (uint32/uint64), ``bool``, ``f32``, ``f64``, ``enum`` (``sub`` is the
number -> name table), ``msg`` (``sub`` is the schema name) or ``blob`` (a BlobProto decoded to an array).
Fields absent here are skipped by wire type when reading and never written.
"""

from __future__ import annotations

from typing import Any

from weights_convert.netspec import V1_LAYER_TYPE_NAMES

FieldDef = tuple[str, str, Any]
Schema = dict[int, FieldDef]

PHASE = {0: "TRAIN", 1: "TEST"}
ENGINE = {0: "DEFAULT", 1: "CAFFE", 2: "CUDNN"}
POOL_METHOD = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
NORM_REGION = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}
ELTWISE_OP = {0: "PROD", 1: "SUM", 2: "MAX"}
VARIANCE_NORM = {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"}
V1_LAYER_TYPE = {code: name for name, code in V1_LAYER_TYPE_NAMES.items()}

_FILLER = ("msg", "FillerParameter")

SCHEMAS: dict[str, Schema] = {
    "BlobShape": {1: ("dim", "i64", None)},
    "NetStateRule": {1: ("phase", "enum", PHASE), 2: ("min_level", "i64", None), 3: ("max_level", "i64", None),
                     4: ("stage", "str", None), 5: ("not_stage", "str", None)},
    "FillerParameter": {1: ("type", "str", None), 2: ("value", "f32", None), 3: ("min", "f32", None),
                        4: ("max", "f32", None), 5: ("mean", "f32", None), 6: ("std", "f32", None),
                        7: ("sparse", "i64", None), 8: ("variance_norm", "enum", VARIANCE_NORM)},
    "ConvolutionParameter": {
        1: ("num_output", "u64", None), 2: ("bias_term", "bool", None), 3: ("pad", "u64", None),
        4: ("kernel_size", "u64", None), 5: ("group", "u64", None), 6: ("stride", "u64", None),
        7: ("weight_filler", *_FILLER), 8: ("bias_filler", *_FILLER),
        9: ("pad_h", "u64", None), 10: ("pad_w", "u64", None), 11: ("kernel_h", "u64", None),
        12: ("kernel_w", "u64", None), 13: ("stride_h", "u64", None), 14: ("stride_w", "u64", None),
        15: ("engine", "enum", ENGINE), 16: ("axis", "i64", None), 17: ("force_nd_im2col", "bool", None),
        18: ("dilation", "u64", None)},
    # Field 13 (round_mode in some forks, dilation or ceil_mode in others) is deliberately left unknown.
    "PoolingParameter": {
        1: ("pool", "enum", POOL_METHOD), 2: ("kernel_size", "u64", None), 3: ("stride", "u64", None),
        4: ("pad", "u64", None), 5: ("kernel_h", "u64", None), 6: ("kernel_w", "u64", None),
        7: ("stride_h", "u64", None), 8: ("stride_w", "u64", None), 9: ("pad_h", "u64", None),
        10: ("pad_w", "u64", None), 11: ("engine", "enum", ENGINE), 12: ("global_pooling", "bool", None)},
    "LRNParameter": {1: ("local_size", "u64", None), 2: ("alpha", "f32", None), 3: ("beta", "f32", None),
                     4: ("norm_region", "enum", NORM_REGION), 5: ("k", "f32", None),
                     6: ("engine", "enum", ENGINE)},
    "InnerProductParameter": {1: ("num_output", "u64", None), 2: ("bias_term", "bool", None),
                              3: ("weight_filler", *_FILLER), 4: ("bias_filler", *_FILLER),
                              5: ("axis", "i64", None), 6: ("transpose", "bool", None)},
    "ReLUParameter": {1: ("negative_slope", "f32", None), 2: ("engine", "enum", ENGINE)},
    "PReLUParameter": {1: ("filler", *_FILLER), 2: ("channel_shared", "bool", None)},
    "DropoutParameter": {1: ("dropout_ratio", "f32", None)},
    "SoftmaxParameter": {1: ("engine", "enum", ENGINE), 2: ("axis", "i64", None)},
    "ReshapeParameter": {1: ("shape", "msg", "BlobShape"), 2: ("axis", "i64", None),
                         3: ("num_axes", "i64", None)},
    "FlattenParameter": {1: ("axis", "i64", None), 2: ("end_axis", "i64", None)},
    "InputParameter": {1: ("shape", "msg", "BlobShape")},
    "BatchNormParameter": {1: ("use_global_stats", "bool", None), 2: ("moving_average_fraction", "f32", None),
                           3: ("eps", "f32", None)},
    "ScaleParameter": {1: ("axis", "i64", None), 2: ("num_axes", "i64", None), 3: ("filler", *_FILLER),
                       4: ("bias_term", "bool", None), 5: ("bias_filler", *_FILLER)},
    "BiasParameter": {1: ("axis", "i64", None), 2: ("num_axes", "i64", None), 3: ("filler", *_FILLER)},
    "ConcatParameter": {1: ("concat_dim", "u64", None), 2: ("axis", "i64", None)},
    "EltwiseParameter": {1: ("operation", "enum", ELTWISE_OP), 2: ("coeff", "f32", None),
                         3: ("stable_prod_grad", "bool", None)},
    # SSD fork (used by ultraface): kept so that the unsupported-layer error can show the order.
    "PermuteParameter": {1: ("order", "u64", None)},
}

# Parameter message name -> schema name; the same inner messages serve V1 and V2 layers.
PARAM_SCHEMAS: dict[str, str] = {
    "batch_norm_param": "BatchNormParameter", "bias_param": "BiasParameter", "concat_param": "ConcatParameter",
    "convolution_param": "ConvolutionParameter", "dropout_param": "DropoutParameter",
    "eltwise_param": "EltwiseParameter", "flatten_param": "FlattenParameter",
    "inner_product_param": "InnerProductParameter", "input_param": "InputParameter",
    "lrn_param": "LRNParameter", "permute_param": "PermuteParameter", "pooling_param": "PoolingParameter",
    "prelu_param": "PReLUParameter", "relu_param": "ReLUParameter", "reshape_param": "ReshapeParameter",
    "scale_param": "ScaleParameter", "softmax_param": "SoftmaxParameter",
}

V2_PARAM_NUMBERS: dict[str, int] = {
    "concat_param": 104, "convolution_param": 106, "dropout_param": 108, "eltwise_param": 110,
    "inner_product_param": 117, "lrn_param": 118, "pooling_param": 121, "relu_param": 123,
    "softmax_param": 125, "prelu_param": 131, "reshape_param": 133, "flatten_param": 135,
    "batch_norm_param": 139, "bias_param": 141, "scale_param": 142, "input_param": 143, "permute_param": 202,
}
V1_PARAM_NUMBERS: dict[str, int] = {
    "concat_param": 9, "convolution_param": 10, "dropout_param": 12, "inner_product_param": 17,
    "lrn_param": 18, "pooling_param": 19, "eltwise_param": 24, "relu_param": 30, "softmax_param": 39,
}

SCHEMAS["LayerParameter"] = {
    1: ("name", "str", None), 2: ("type", "str", None), 3: ("bottom", "str", None), 4: ("top", "str", None),
    7: ("blobs", "blob", None), 8: ("include", "msg", "NetStateRule"), 9: ("exclude", "msg", "NetStateRule"),
    **{num: (name, "msg", PARAM_SCHEMAS[name]) for name, num in V2_PARAM_NUMBERS.items()},
}
SCHEMAS["V0LayerParameter"] = {
    1: ("name", "str", None), 2: ("type", "str", None), 3: ("num_output", "u64", None),
    4: ("biasterm", "bool", None), 5: ("weight_filler", *_FILLER), 6: ("bias_filler", *_FILLER),
    7: ("pad", "u64", None), 8: ("kernelsize", "u64", None), 9: ("group", "u64", None),
    10: ("stride", "u64", None), 11: ("pool", "enum", POOL_METHOD), 12: ("dropout_ratio", "f32", None),
    13: ("local_size", "u64", None), 14: ("alpha", "f32", None), 15: ("beta", "f32", None),
    22: ("k", "f32", None), 50: ("blobs", "blob", None), 65: ("concat_dim", "u64", None),
}
SCHEMAS["V1LayerParameter"] = {
    1: ("layer", "msg", "V0LayerParameter"), 2: ("bottom", "str", None), 3: ("top", "str", None),
    4: ("name", "str", None), 5: ("type", "enum", V1_LAYER_TYPE), 6: ("blobs", "blob", None),
    32: ("include", "msg", "NetStateRule"), 33: ("exclude", "msg", "NetStateRule"),
    **{num: (name, "msg", PARAM_SCHEMAS[name]) for name, num in V1_PARAM_NUMBERS.items()},
}
SCHEMAS["NetParameter"] = {
    1: ("name", "str", None), 2: ("layers", "msg", "V1LayerParameter"), 3: ("input", "str", None),
    4: ("input_dim", "i64", None), 5: ("force_backward", "bool", None), 8: ("input_shape", "msg", "BlobShape"),
    100: ("layer", "msg", "LayerParameter"),
}

# BlobProto field numbers (decoded by hand in caffemodel.py for speed).
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_DIFF, BLOB_SHAPE, BLOB_DOUBLE_DATA, BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9


def field_by_name(schema_name: str) -> dict[str, tuple[int, str, Any]]:
    """The schema ``schema_name`` keyed by field name: name -> (number, kind, sub)."""
    return {name: (num, kind, sub) for num, (name, kind, sub) in SCHEMAS[schema_name].items()}
