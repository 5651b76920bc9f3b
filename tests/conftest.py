"""Shared test fixtures: where the real reference data lives, and JAX settings for CPU tests."""

from __future__ import annotations

import pathlib

import pytest

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
