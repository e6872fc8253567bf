"""The corpus of bad inputs (tests/bad_inputs.py): every case gives the documented exit
status with one line naming the problem, no traceback, within its time limit, and no
good file changes.

Which cases go which way:

* in process, in a child runner with per-case time limits (a hang is caught and named):
  configurations, data and samples files, output locations and locks through the input
  boundary of ``solve`` (:func:`mfc_hpc.jobs.inputs.check_solve_inputs`), PETSc options
  through ``check_user_options`` and a solver's construction, checkpoints (truncated,
  bit-flipped at many offsets including the HDF5 metadata, with and without their digest
  sidecar, damaged sidecars, foreign files, attributes edited with the CRC recomputed)
  through ``fileio.checkpoint.probe``/``verify``, solution files through ``read_solution``;
* through the real command line (``mpiexec``, one or two ranks): a representative subset
  of every family and each defect the issue lists.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from bad_inputs import (Case, check_result, cli_cases, digest_tree, good_fingerprints, make_corpus)
from conftest import PYTHON, REPO, mpi_env  # noqa: F401

HERE = Path(__file__).resolve().parent
PROBE_TIMEOUT = "5"  # seconds the child-process probe of an HDF5 file without a digest may take


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    fx, cases = make_corpus(root)
    return fx, cases, cli_cases(fx)


def run_in_children(cases: list[Case], fx, work: Path) -> dict[str, dict]:
    """Run the in-process cases in a child runner; a case that outlives its time limit is
    recorded as hung, the runner killed and restarted after it."""
    results: dict[str, dict] = {}
    todo = list(cases)
    env = {**mpi_env(), "MFC_HDF5_PROBE_TIMEOUT": PROBE_TIMEOUT}
    for attempt in range(50):
        if not todo:
            break
        spec = work / f"cases_{attempt}.json"
        out = work / f"results_{attempt}.jsonl"
        spec.write_text(json.dumps({"fixtures": fx.to_json(), "cases": [c.to_json() for c in todo]}))
        out.write_text("")
        p = subprocess.Popen([PYTHON, str(HERE / "bad_inputs.py"), "run", str(spec), str(out)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        by_id = {c.id: c for c in todo}
        started, t_start, pos = None, time.monotonic(), 0
        while True:
            text = out.read_text()
            lines = text[pos:].splitlines(keepends=True)
            for line in lines:
                if not line.endswith("\n"):
                    break
                pos += len(line)
                r = json.loads(line)
                if "start" in r:
                    started, t_start = r["start"], time.monotonic()
                else:
                    results[r["id"]] = r
                    started = None
            if p.poll() is not None:
                break
            if started is not None and time.monotonic() - t_start > by_id[started].timeout + 15:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                results[started] = {"id": started, "hung": True}
                break
            time.sleep(0.05)
        log = p.stdout.read().decode(errors="replace") if p.stdout else ""
        if started is not None and started not in results:  # the runner died inside this case
            results[started] = {"id": started, "code": -1, "message": f"runner died: {log[-500:]}", "seconds": 0.0,
                                "changed": []}
        todo = [c for c in todo if c.id not in results]
        if todo and p.returncode not in (0, None, -9) and started is None:
            pytest.fail(f"the runner failed outside any case (exit {p.returncode}):\n{log[-3000:]}")
    return results


def test_the_corpus_is_large_and_covers_every_category(corpus):
    fx, cases, cli = corpus
    by = Counter(c.category for c in cases + cli)
    assert len(cases) + len(cli) >= 300
    for cat, least in (("config", 100), ("data", 40), ("checkpoint", 150), ("solution", 40), ("petsc", 25),
                       ("output", 15), ("cli", 40), ("model", 300)):
        assert by[cat] >= least, (cat, by)
    ck = [c for c in cases if c.category == "checkpoint"]
    assert sum("no_sidecar/flip" in c.id for c in ck) >= 40 and sum("with_sidecar/flip" in c.id for c in ck) >= 100
    assert sum("truncated" in c.id for c in ck) >= 30
    assert any("v1/gcol" in c.id for c in ck)
    assert sum(c.ranks == 2 for c in cli) >= 8


def test_in_process_corpus(corpus, tmp_path):
    fx, cases, _ = corpus
    before = digest_tree(fx.protected)
    t = time.monotonic()
    results = run_in_children(cases, fx, tmp_path)
    good = good_fingerprints(fx.to_json(), cases)
    failures = []
    for c in cases:
        why = check_result(c, results.get(c.id), good)
        if why:
            failures.append(f"{c.id}: {why}")
    assert digest_tree(fx.protected) == before, "a good file changed"
    codes = Counter((c.category, results[c.id].get("code")) for c in cases if c.id in results)
    print(f"\n{len(cases)} in-process cases in {time.monotonic() - t:.1f} s; (category, exit) counts: "
          f"{dict(sorted(codes.items()))}")
    slow = sorted(((r.get("seconds", 0.0), k) for k, r in results.items()), reverse=True)[:3]
    print("slowest:", [(f"{s:.2f} s", k) for s, k in slow])
    assert not failures, f"{len(failures)} of {len(cases)} cases wrong:\n" + "\n".join(failures)
    # a damaged file without a digest may be accepted only where the damage is in bytes nobody reads
    # (HDF5 files: under a quarter; model files under 60 %: a zip's local headers and central
    # directory repeat fields nobody reads, version, time, attributes, extra)
    for cats, share in ((("checkpoint", "solution"), 0.25), (("model",), 0.6)):
        mine = [c for c in cases if c.may_pass and c.category in cats]
        accepted = [c.id for c in mine if results[c.id]["code"] == 0]
        assert len(accepted) < share * len(mine), (cats, len(accepted), len(mine), accepted[:20])


def run_cli_case(c: Case) -> tuple[int | None, str, str, float]:
    """One command line: ``python -m mfc_hpc ...`` on one rank (as ``mfc-hpc`` runs without
    a launcher), ``mpiexec -n P python -m mfc_hpc ...`` on more."""
    cmd = ([PYTHON] if c.ranks == 1 else ["mpiexec", "-n", str(c.ranks), PYTHON]) + ["-m", "mfc_hpc"] + list(c.args)
    env = {**mpi_env(), "MFC_HDF5_PROBE_TIMEOUT": PROBE_TIMEOUT, "MFC_AGREE_TIMEOUT": "30",
           "MFC_FS_SETTLE_SECONDS": "1"}
    t = time.monotonic()
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=c.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err, time.monotonic() - t
    return p.returncode, out, err, time.monotonic() - t


def test_command_line_corpus(corpus):
    fx, _, cli = corpus
    before = digest_tree(fx.protected)
    failures, times = [], []
    t0 = time.monotonic()
    for c in cli:
        code, out, err, dt = run_cli_case(c)
        ours = [line for line in err.splitlines() if line.startswith("mfc-hpc")]
        why = None
        if code is None:
            why = f"hung (killed after {c.timeout:g} s)"
        elif code != c.code:
            why = f"exit {code} instead of {c.code}: {err[-600:]}"
        elif "Traceback" in out + err:
            why = f"traceback: {err[-600:]}"
        elif c.code and (len(ours) != 1 or not ours[0].startswith("mfc-hpc: error: ")):
            why = f"not one error line: {ours}"
        elif c.code and not re.search(c.needle, ours[0]):
            why = f"message does not match {c.needle!r}: {ours[0]}"
        after = digest_tree(fx.protected)
        if after != before:
            why = (why or "") + f" changed good files: {[k for k in after if after[k] != before.get(k)][:3]}"
            before = after
        if why:
            failures.append(f"{c.id} ({c.ranks} rank{'s' if c.ranks > 1 else ''}, {dt:.1f} s): {why}")
        times.append((dt, c.id))
    print(f"\n{len(cli)} command lines in {time.monotonic() - t0:.1f} s; slowest: "
          f"{[(f'{t:.1f} s', i) for t, i in sorted(times, reverse=True)[:3]]}")
    assert not failures, f"{len(failures)} of {len(cli)} command lines wrong:\n" + "\n".join(failures)
