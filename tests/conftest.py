"""Shared test fixtures: where the real reference data lives, and JAX settings for CPU tests."""

from __future__ import annotations

import gc
import os
import pathlib

import jax
import pytest

# The command line keeps a persistent compilation cache (jaxviz.workflows.compile_cache); the tests that
# run it leave the user's cache alone, and the one test of the cache names its own folder.
os.environ.setdefault("JAXVIZ_COMPILATION_CACHE", "off")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> pathlib.Path:
    """A path under the shared reference data; skips the test, saying why, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path.relative_to(REPO.parent)} is not present beside this checkout")
    return path


@pytest.fixture
def shared_data():
    """Function returning paths inside ``../shared/data`` (skipping when they are missing)."""
    return shared_path


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each program XLA:CPU compiles keeps a few memory mappings of its own; the whole suite in one process
    compiles more than 10,000, past Linux's default limit of 65,530 mappings per process, and the next
    compile then dies with a segmentation fault. A module rarely reuses another's programs.
    """
    yield
    jax.clear_caches()
    gc.collect()
