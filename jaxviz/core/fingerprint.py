"""Value keys: two setups that compute the same thing get the same key, so they share one compilation.

``jax.jit`` caches by function identity, and the engine builds its pieces as closures (objectives,
operators, optax transforms), so two equal ``objectives.unit("fc8")`` built separately would compile
twice. ``value_key`` walks a setup structurally instead: a function is its code plus the values it
closes over (and its defaults), a dataclass its type and fields, a tuple (optax's transforms are
NamedTuples of closures) its items, an array its shape, dtype and a digest of its bytes. Objects with
none of these shapes fall back to their own ``==``/``hash`` when they have one, and to identity last.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
from typing import Any, Hashable

import jax
import numpy as np

_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def value_key(obj: Any) -> Hashable:
    """A hashable key equal for objects that compute the same thing (see the module docstring)."""
    return _key(obj, ())


def _key(obj: Any, path: tuple[int, ...]) -> Hashable:
    if isinstance(obj, _SCALARS):
        return (type(obj).__name__, obj)
    if id(obj) in path:  # a closure that refers to itself
        return ("cycle", path.index(id(obj)))
    path = path + (id(obj),)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        return ("array", a.shape, str(a.dtype), hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
    if isinstance(obj, types.FunctionType):
        cells = tuple(_key(_cell(c), path) for c in obj.__closure__ or ())
        return ("function", obj.__module__, obj.__qualname__, obj.__code__, cells,
                _key(obj.__defaults__, path), _key(obj.__kwdefaults__, path))
    if isinstance(obj, functools.partial):
        return ("partial", _key(obj.func, path), _key(obj.args, path), _key(obj.keywords, path))
    if isinstance(obj, types.MethodType):
        return ("method", _key(obj.__func__, path), _key(obj.__self__, path))
    if isinstance(obj, (types.BuiltinFunctionType, types.ModuleType, type)):
        return ("named", obj)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__qualname__, tuple(_key(v, path) for v in obj))
    if isinstance(obj, dict):
        return ("dict", tuple(sorted(((repr(k), _key(v, path)) for k, v in obj.items()), key=lambda kv: kv[0])))
    if isinstance(obj, (set, frozenset)):
        return ("set", tuple(sorted((_key(v, path) for v in obj), key=repr)))
    if dataclasses.is_dataclass(obj):
        return ("dataclass", type(obj), tuple((f.name, _key(getattr(obj, f.name, None), path))
                                              for f in dataclasses.fields(obj)))
    try:
        hash(obj)
        return ("object", type(obj), obj)
    except TypeError:
        return ("identity", type(obj), id(obj))


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled (a closure defined before its variable)
        return None


__all__ = ["value_key"]
