"""Every code block of the README runs as written and gives what the text around it claims.

Python blocks run in order in one namespace (a later block uses names an earlier one made); shell
blocks run each jaxviz command. A block preceded by ``<!-- readme-test: skip: REASON -->`` is skipped
with that reason (downloads, the test command itself). Fast mode: step and sample counts in the shell
commands are cut (``--steps 3``, ``--n 40``, ``--units all`` -> a few units) so the suite stays short;
the Python blocks run exactly as written.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(\s*)```(\w+)\s*$")


def blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason) for every fenced block, in order."""
    out, lines, i = [], README.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            indent, lang = m.group(1), m.group(2)
            prev = lines[i - 1].strip() if i else ""
            skip = prev.split("readme-test: skip:", 1)[1].rstrip("-> ").strip() if "readme-test: skip:" in prev else None
            j = i + 1
            while not lines[j].strip().startswith("```"):
                j += 1
            code = "\n".join(line[len(indent):] for line in lines[i + 1:j])
            out.append((lang, code, skip))
            i = j
        i += 1
    return out


def fast(command: str) -> str:
    """A shell command with its step and sample counts cut for the test."""
    command = re.sub(r"--steps \d+", "--steps 3", command)
    command = re.sub(r"--n \d+", "--n 40", command)
    return command.replace("--units all", "--units 0-7")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("readme")


def test_every_block_is_run_or_says_why_not():
    langs = {lang for lang, _, _ in blocks()}
    assert langs <= {"python", "sh"}, langs
    assert sum(1 for _, _, skip in blocks() if skip is None) >= 6


@pytest.mark.slow  # every Python block as written: about a minute on a 2-core CPU
def test_python_blocks_run_and_hold_their_claims(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    for lang, code, skip in blocks():
        if lang == "python" and skip is None:
            exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (the README's own code)
    printed = capsys.readouterr().out
    # The engine block: DGN-AM puts fc8 unit 3 on top, the judge reads a 3, nothing is flagged.
    report = namespace["result"].report
    assert report.rank == 0 and report.judge_label == "3" and report.flags == ()
    assert (workdir / "out" / "three.png").is_file()
    # "every class at once": 10 units x 2 seeds, one report per run.
    assert len(namespace["batch"].report) == 20
    # The pixel-space example: rank 0 and the independent classifier reads a 7.
    pixels = namespace["pixels"].report
    assert pixels.rank == 0 and pixels.judge_label == "7", pixels
    assert "rank 0" in printed
    # The taps block: the forward pass returns what was asked for.
    assert set(namespace["acts"]) == {"conv5:pre", "conv5", "fc8"}
    # Your own network: taps by module path and sown name; rank 0, scored with the shipped judge; the
    # error for a tap that is not there reads as the text says.
    mine, own = namespace["mine"], namespace["own"]
    assert mine.tap_names == ("conv", "conv_relu", "hidden", "logits", "output")
    assert own.report.rank == 0 and own.report.judge_label is not None
    with pytest.raises(KeyError, match="the network 'SmallNet' has no tap 'fc8'; its taps are: conv, conv_relu, "
                                       "hidden, logits, output"):
        mine(np.zeros((1, 28, 28, 1), np.float32), ("fc8",))  # (later blocks rebind x)
    # The inverse-set block: as many samples as asked, every one in range.
    inverse = namespace["inverse"] if "inverse" in namespace else namespace["result_set"]
    assert inverse.status == "ok" and len(inverse.codes) == 500
    assert np.all((inverse.activations >= 10.0) & (inverse.activations <= 15.0))


def shell_commands() -> list[str]:
    return [line.strip() for lang, code, skip in blocks() if lang == "sh" and skip is None
            for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_shell_blocks_only_call_the_project(monkeypatch):
    for command in shell_commands():
        assert command.startswith(".venv/bin/python -m jaxviz "), command


@pytest.mark.slow  # each jaxviz command of the README, in fast mode
@pytest.mark.parametrize("command", shell_commands())
def test_shell_command_runs(command, workdir):
    args = shlex.split(fast(command))
    done = subprocess.run([sys.executable, *args[1:]], cwd=workdir, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CI": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    if " sweep " in command:
        out = workdir / args[args.index("--out") + 1]
        assert (out / "index.html").is_file() and (out / "results.jsonl").is_file()
    if " visualize " in command:
        assert "rank 0" in done.stdout and "wrote " in done.stdout


@pytest.mark.slow  # the whole fc6 layer, 300 steps: 3-5 minutes on 2 cores
def test_the_fc6_sweep_puts_what_the_readme_says_on_top(workdir):
    """The README's fc6 sweep, run as written: the share of units on top and firing that its text claims
    (and the issue's bars, 90 % on top and 95 % firing), within the few units of noise it warns about."""
    command = next(c for c in shell_commands() if "--layer fc6 --units all --method dgn_am" in c)
    text = README.read_text()
    claimed = int(re.search(r"for \*\*\d+ %\*\* of the units\s+\((\d+) of 256\b", text).group(1))
    args = shlex.split(command.replace("--out out/fc6", "--out full-fc6"))
    done = subprocess.run([sys.executable, *args[1:]], cwd=workdir, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "CI": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (workdir / "full-fc6" / "results.jsonl").read_text().splitlines()]
    on_top = sum(r["rank"] == 0 and r["scored_rank"] == 0 for r in rows)
    fires = sum(r["scored_activation"] > 0 for r in rows)
    assert len(rows) == 256 and fires >= 0.95 * 256, fires
    assert on_top >= 0.90 * 256 and abs(on_top - claimed) <= 8, (on_top, claimed)
