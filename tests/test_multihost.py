"""The multi-host sweep, run as two processes on this machine, into one shared folder.

Each process calls ``jax.distributed.initialize(coordinator_address="localhost:PORT", num_processes=2,
process_id=i)`` with its CPU device, then runs the same sweep: process i takes the chunks c with
``c % 2 == i`` and process 0 writes the table and gallery after a barrier (``workflows/sweep.py``). The
result must equal a single-process run bit for bit, and a run in which one process is killed mid-way
(SIGKILL while it computes its second chunk) must finish when rerun.

CPU collectives: the barrier (``multihost_utils.sync_global_devices``) is a cross-process collective,
which XLA:CPU runs through gloo. gloo is the CPU default of the jax this was written with (0.10: a
plain ``initialize`` worked); versions without that default need
``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before initializing, which the
worker below sets explicitly (harmless where it is the default).

Two things this test found and the code now handles: orbax runs a barrier across all processes in
every checkpoint restore, so process 0 loading a model alone (the judge, to score the sweep) paired
its barrier with the other process's and both aborted; checkpoints are now read process-locally. And
a process that left ``sweep`` while process 0 still wrote the gallery failed jax's shutdown barrier;
all processes now leave together.

Run directly, this file is the worker: ``python tests/test_multihost.py PROCESS_ID PORT OUT [DIE_AT_CHUNK]``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

UNITS = tuple(range(8))  # 4 chunks of 2: process 0 takes chunks 0 and 2, process 1 chunks 1 and 3
STEPS, CHUNK = 2, 2


def _config():
    from jaxviz.workflows import sweep as sw

    return sw.SweepConfig("fc8", UNITS, "pixel", steps=STEPS, chunk_size=CHUNK)


def worker(process_id: int, port: int, out: str, die_at_chunk: int | None) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=300)
    import jaxviz.models as jm
    from jaxviz.workflows import sweep as sw

    assert jax.process_count() == 2 and jax.process_index() == process_id
    if die_at_chunk is not None:
        real = sw.atomic_write_bytes

        def dying(path, data):
            if path.name == f"chunk_{die_at_chunk:05d}.npz":  # its PNGs are written, the chunk is not
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        sw.atomic_write_bytes = dying
    clf, gen = jm.load("caffenet"), jm.load("generator")
    s = sw.sweep(clf, gen, _config(), out, progress=False)
    print(f"process {process_id}: computed {s.computed} of {s.runs}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out, die: dict[int, int] | None = None) -> list[subprocess.Popen]:
    from tests.helpers import faults

    port, die = _free_port(), die or {}
    return [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(out),
                              *([str(die[i])] if i in die else [])],
                             env=faults.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]


def _finish(procs, timeout: float = 900) -> list[str]:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    return outputs


def _compare(out, ref) -> None:
    from jaxviz.workflows import runfolder
    from jaxviz.workflows import sweep as sw
    from tests.helpers import faults

    data, want = sw.load_chunks(out), sw.load_chunks(ref)
    assert sorted(data) == sorted(want)
    for k in data:
        if k != "seconds":  # wall time per run
            np.testing.assert_array_equal(data[k], want[k], err_msg=k)
    assert faults.files_of(out / runfolder.UNITS_DIR) == faults.files_of(ref / runfolder.UNITS_DIR)
    assert (out / "index.html").is_file() and (out / runfolder.RESULTS).is_file()
    assert faults.leftovers(out) == [] and list((out / runfolder.CHUNKS).glob("*.claim")) == []


@pytest.mark.slow  # three runs of two processes on 2 CPU cores: a few minutes
def test_two_processes_equal_one_and_finish_after_a_kill(tmp_path):
    import jaxviz.models as jm
    from jaxviz.workflows import runfolder
    from jaxviz.workflows import sweep as sw

    ref = tmp_path / "single"
    sw.sweep(jm.load("caffenet"), jm.load("generator"), _config(), ref, progress=False)

    shared = tmp_path / "shared"
    outputs = _finish(_start(shared))
    assert "process 0: computed 4 of 8" in outputs[0] and "process 1: computed 4 of 8" in outputs[1]
    _compare(shared, ref)

    killed = tmp_path / "killed"
    procs = _start(killed, die={1: 3})  # process 1 dies computing chunk 3, after committing chunk 1
    procs[1].wait(timeout=900)
    assert procs[1].returncode == -signal.SIGKILL, procs[1].stdout.read()[-3000:]
    deadline = time.time() + 900
    while not runfolder.chunk_path(killed, 2).exists() and procs[0].poll() is None and time.time() < deadline:
        time.sleep(0.2)  # process 0 finishes its chunks, then waits at the barrier for a peer that is gone
    procs[0].kill()  # the job is lost with one of its processes, as on a cluster
    procs[0].wait()
    assert [runfolder.chunk_path(killed, c).exists() for c in range(4)] == [True, True, True, False]
    assert runfolder.claim_path(killed, 3).exists()  # the dead process's claim, taken over below
    outputs = _finish(_start(killed))
    assert "process 0: computed 0 of 8" in outputs[0] and "process 1: computed 2 of 8" in outputs[1]
    _compare(killed, ref)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
