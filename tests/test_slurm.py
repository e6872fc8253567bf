"""SLURM job templates (job_templates/solve_*.sbatch, sweep_array.sbatch): rendered,
checked with ``bash -n`` and run end to end through stand-ins for sbatch/srun/scontrol
(tests/fake_slurm) that execute with local mpiexec; the sweep scripts make and collect a
4-point sweep; the self-requeueing job checkpoints on its signal, exits 75, requeues and
finishes with the answer of an uninterrupted run."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import PYTHON, REPO, mpi_env
from test_checkpoint import TWO_CLASS, assert_same

TEMPLATES = ["solve_single_node", "solve_multi_node", "sweep_array", "solve_requeue"]
FAKE = REPO / "tests" / "fake_slurm"
SMALL = """
[mesh]
nodes = 33
layers = 8
[model]
nu = 0.1
[[classes]]
mean = -0.5
var = 0.25
[loss]
alpha = 1.0
target = 0.5
"""


def script(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([PYTHON, str(REPO / "scripts" / name), *map(str, args)], capture_output=True, text=True,
                       env=mpi_env(), cwd=REPO, timeout=300)
    if check and p.returncode:
        pytest.fail(f"{name} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def render(tmp: Path, name: str, **values: str) -> Path:
    out = tmp / f"{name}.sh"
    kv = [f"{k}={v}" for k, v in {"ACCOUNT": "proj", "PARTITION": "debug", "TIME": "00:10:00",
                                   "REPO": REPO, **values}.items()]
    script("render_job.py", REPO / "job_templates" / f"{name}.sbatch", *kv, "-o", out)
    return out


def sbatch(job: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    e = {**mpi_env(), "PATH": f"{FAKE}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(cwd), **env}
    return subprocess.run(["sbatch", str(job)], capture_output=True, text=True, env=e, cwd=cwd, timeout=600)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_documents_renders_and_parses(name, tmp_path):
    text = (REPO / "job_templates" / f"{name}.sbatch").read_text()
    head = text.split("#SBATCH", 1)[0]
    for var in ("ACCOUNT", "PARTITION", "NODES", "TASKS", "TIME", "CONFIG"):
        assert re.search(rf"^#\s+.*\b{var}\b", head, re.M), f"{name}: {var} not documented at the top"
    assert "OMP_NUM_THREADS=1" in text
    assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
    job = render(tmp_path, name, NODES="2", TASKS="4", CONFIG="c.toml", OUT="o", SWEEP="s", ARRAY="0-3")
    rendered = job.read_text()
    assert not re.search(r"@[A-Z_]+@", rendered)
    assert "--account=proj" in rendered and "--ntasks=4" in rendered
    assert subprocess.run(["bash", "-n", str(job)]).returncode == 0
    missing = script("render_job.py", REPO / "job_templates" / f"{name}.sbatch", "ACCOUNT=x", check=False)
    assert missing.returncode == 2 and "no value for" in missing.stderr


def test_requeue_template_directives():
    text = (REPO / "job_templates" / "solve_requeue.sbatch").read_text()
    for d in ("#SBATCH --signal=B:USR1@", "#SBATCH --requeue", "#SBATCH --open-mode=append", "--restart auto",
              "scontrol requeue", "EXIT_REQUEUE=75"):
        assert d in text


@pytest.mark.parametrize("name,nodes", [("solve_single_node", "1"), ("solve_multi_node", "2")])
def test_solve_templates_run(name, nodes, tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    job = render(tmp_path, name, NODES=nodes, TASKS="2", CONFIG=cfg, OUT=tmp_path / "out")
    r = sbatch(job, tmp_path)
    log = "\n".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert "Submitted batch job" in r.stdout
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["converged"] and s["ranks"] == 2
    assert (tmp_path / "out" / "solution.xmf").is_file()


def test_sweep_array_four_points_one_table(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(SMALL)
    sw = tmp_path / "sweep"
    r = script("make_sweep.py", base, "--set", "model.nu=0.1,0.2", "--set", "loss.alpha=1,2", "--out", sw)
    assert "ARRAY=0-3" in r.stdout
    assert len((sw / "configs.txt").read_text().split()) == 4
    bad = script("make_sweep.py", base, "--set", "model.nu=-1", "--out", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "model.nu" in bad.stderr and not (tmp_path / "bad").exists()
    job = render(tmp_path, "sweep_array", TASKS="2", SWEEP=sw, ARRAY="0-3")
    r = sbatch(job, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(tmp_path.glob("mfc-sweep-*_*.out"))) == 4
    r = script("collect_sweep.py", sw)
    rows = json.loads((sw / "sweep_table.json").read_text())
    assert [(row["model.nu"], row["loss.alpha"]) for row in rows] == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]
    assert all(row["status"] == "converged" for row in rows)
    assert len({row["J_h"] for row in rows}) == 4  # four different problems
    assert "4/4 converged" in r.stdout and "J_h" in r.stdout.splitlines()[0]


def test_requeue_job_checkpoints_requeues_and_finishes(tmp_path):
    cfg = tmp_path / "two_class.toml"
    cfg.write_text(TWO_CLASS)
    ref = tmp_path / "ref"
    subprocess.run(["mpiexec", "-n", "2", PYTHON, "-m", "mfc_hpc", "solve", str(cfg), "--out", str(ref),
                    "--no-checkpoint"], env=mpi_env(), cwd=REPO, check=True, capture_output=True, timeout=300)
    out = tmp_path / "out"
    job = render(tmp_path, "solve_requeue", NODES="1", TASKS="2", CONFIG=cfg, OUT=out)
    # the stand-in sends B:USR1 (as --signal=B:USR1@120 would) once the second checkpoint exists
    r = sbatch(job, tmp_path, FAKE_SLURM_SIGNAL_WHEN=str(out / "checkpoints" / "ckpt_000002.h5"))
    log = (tmp_path / "mfc-long-1000.out").read_text()
    assert r.returncode == 0, log[-4000:]
    assert "asking the ranks to checkpoint" in log and "written on SIGUSR1" in log
    assert "mfc-hpc solve exited 75" in log and "requeueing job 1000" in log
    assert "run 2 on 2 tasks" in log and "mfc-hpc solve exited 0" in log
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] and s["checkpoint"]["restarts"] == 1
    assert_same(ref / "solution.h5", out / "solution.h5")
