"""The public surface a reader sees: explicit names in ``__all__``, visible to ``dir`` and ``help``, documented."""

from __future__ import annotations

import importlib
import inspect
import pydoc

import pytest

import jaxviz

PACKAGES = ["jaxviz", "jaxviz.core", "jaxviz.models", "jaxviz.io", "jaxviz.recipes", "jaxviz.lenses",
            "jaxviz.inverse_set", "jaxviz.workflows", "weights_convert"]


def test_entry_points_are_visible_to_dir_and_help():
    for name in ("visualize", "visualize_batch", "load", "sweep", "Method", "Result", "objectives", "recipes"):
        assert name in dir(jaxviz) and name in jaxviz.__all__
    text = pydoc.render_doc(jaxviz, renderer=pydoc.plaintext)
    assert "visualize(net" in text and "class Method" in text


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists_and_functions_say_what_they_do(package):
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} has no docstring"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ names missing attributes: {missing}"
    undocumented = [n for n in module.__all__ if (inspect.isfunction(getattr(module, n))
                                                  or inspect.isclass(getattr(module, n)))
                    and not inspect.getdoc(getattr(module, n))]
    assert not undocumented, f"{package}: no docstring on {undocumented}"


def test_method_and_result_fields_are_explained():
    import ast
    import pathlib

    source = pathlib.Path(inspect.getsourcefile(jaxviz.Method)).read_text()
    lines = source.splitlines()
    for cls in ("Method", "Result"):
        node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls)
        fields = [n for n in node.body if isinstance(n, ast.AnnAssign)]
        assert fields and all("#" in lines[f.lineno - 1] for f in fields), f"a field of {cls} has no comment"
