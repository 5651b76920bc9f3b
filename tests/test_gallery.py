"""The static gallery page, checked in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from jaxviz.io import gallery, images

# Offline flags: no sandbox (containers), no GPU, no network side traffic, a fresh profile each run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    """The chromium binary, or a skip saying why (CI installs it in .ci/run)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does so in CI)")


def run_page(page: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    """Load ``page`` from disk in headless chromium with console logging on stderr."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                               "--v=0", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)


def _rows(folder: pathlib.Path, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n):
        path = images.save_png(rng.integers(0, 255, (28, 28), dtype=np.uint8), folder / "units" / f"u{u}.png")
        rows.append({"unit": u, "seed": 0, "label": f"class <{u}>", "final_activation": float(rng.normal()),
                     "best_activation": 1.0, "rank": u % 3, "seconds": 0.1, "failed_step": -1 if u else 3,
                     "image": str(path.relative_to(folder))})
    return rows


def test_gallery_page_has_one_tile_per_unit_and_no_console_errors(tmp_path):
    rows = _rows(tmp_path, 23)
    sheets = gallery.write_contact_sheets(tmp_path, rows)
    page = gallery.write_gallery(tmp_path / "index.html", "test </script> gallery",
                                 [gallery.Section("units", rows, sheets), gallery.Section("figures only", [])],
                                 {"units_per_second": 1.5})
    dom = run_page(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
    assert 'data-ready="1"' in dom.stdout and "data-errors" not in dom.stdout
    assert dom.stdout.count('class="tile') == 23
    assert dom.stdout.count('data-unit="') == 23
    shot = tmp_path / "shot.png"
    run_page(page, f"--screenshot={shot}", "--window-size=1000,700")
    assert shot.is_file() and shot.stat().st_size > 1000


def test_a_section_named_as_its_page_shows_the_title_once(tmp_path):
    rows = _rows(tmp_path, 2)
    text = gallery.render_gallery("dgn_am sweep of fc6", [gallery.Section("dgn_am sweep of fc6", rows),
                                                         gallery.Section("other", [])])
    assert text.count("dgn_am sweep of fc6</h") == 1 and "<h2>other</h2>" in text
