"""The pre-forked training server (caanet.trainserver): a child trains exactly what the job's own
process would; a refused or unreachable server falls back to the job's process, saying why; a
killed job stops its child (which checkpoints); the server stops with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from caanet import trainserver
from caanet.spec import CellSpec
from caanet.trainserver import ServerUnavailable, TrainJob

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the training server runs on Linux only"),
]

SETTINGS = dict(iterations=8, batch_size=8, channels=[4, 8, 8, 16], device_channels=[4, 8], lr_decay_every=4,
                lambda_check_every=4, checkpoint_every=4, log_every=2, val_fraction=0.2, eval_batch_size=16)


def make_job(cache: Path, out: Path, cell: str = "cnn_pool-att-multi_task-L2", code: str = "code-1", **settings) -> TrainJob:
    spec = CellSpec.from_id(cell, dataset="tiny", seed=3)
    return TrainJob(cache=str(cache), spec=spec.to_dict(), settings={**SETTINGS, **settings}, out_dir=str(out),
                    threads=1, code=code, log=str(out.parent / f"{out.name}.log"), options={})


@pytest.fixture
def server(tmp_path):
    proc, address = trainserver.start_server(code="code-1", log=tmp_path / "server.log")
    yield proc, address
    trainserver.stop_server(proc)
    assert proc.returncode is not None


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_job_is_plain_json(tmp_path):
    job = make_job(Path("cache.h5"), tmp_path / "cell")
    assert TrainJob.from_json(job.to_json()) == job
    json.loads(job.to_json())  # nothing but JSON in it: it crosses a socket


def test_child_of_the_server_trains_what_the_jobs_own_process_trains(server, tiny_cache, tmp_path):
    proc, address = server
    here, there = tmp_path / "here", tmp_path / "there"
    ev_here = trainserver.run_job(make_job(tiny_cache, here))
    assert trainserver.submit(make_job(tiny_cache, there), address) == 0

    ev_there = json.loads((there / "evaluation.json").read_text())
    for key in ("mean_all", "mean_bc", "per_device", "n_train_clips", "n_validation_clips"):
        assert ev_there[key] == ev_here[key], key
    pd.testing.assert_frame_equal(pd.read_csv(there / "predictions.csv"), pd.read_csv(here / "predictions.csv"))
    a = torch.load(here / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(there / "model.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = Path(make_job(tiny_cache, there).log).read_text()
    assert "trained in the server's child" in log and "exit status 0" in log
    assert proc.poll() is None and children_of(proc.pid) == []  # the child was reaped


def test_two_jobs_at_once_each_get_a_child(server, tiny_cache, tmp_path):
    proc, address = server
    clients = [
        subprocess.Popen([sys.executable, "-c", "import sys; from caanet import trainserver as t; "
                          f"sys.exit(t.submit(t.TrainJob.from_json(sys.argv[1]), {address!r}))",
                          make_job(tiny_cache, tmp_path / f"cell{i}", cell).to_json()])
        for i, cell in enumerate(["cnn_pool-max-joint", "cnn_nopool-avg-single_device-b"])
    ]
    assert [c.wait(120) for c in clients] == [0, 0]
    assert all((tmp_path / f"cell{i}" / "evaluation.json").is_file() for i in range(2))


def test_failed_training_is_a_failed_job_with_its_traceback_in_the_log(server, tmp_path):
    _, address = server
    job = make_job(tmp_path / "no-such-cache.h5", tmp_path / "cell")
    assert trainserver.submit(job, address) == 1
    log = Path(job.log).read_text()
    assert "no-such-cache.h5" in log and "exit status 1" in log
    assert not (tmp_path / "cell" / "evaluation.json").exists()


def test_job_of_other_code_is_refused_and_trains_in_its_own_process(server, tiny_cache, tmp_path):
    _, address = server
    job = make_job(tiny_cache, tmp_path / "cell", code="code-2")
    with pytest.raises(ServerUnavailable, match="training-code hash differs"):
        trainserver.submit(job, address)
    assert trainserver.run(job, address) == 0
    assert (tmp_path / "cell" / "evaluation.json").is_file()
    assert "training-code hash differs" in Path(job.log).read_text()


def test_no_server_there_trains_in_the_jobs_own_process(tiny_cache, tmp_path):
    job = make_job(tiny_cache, tmp_path / "cell")
    assert trainserver.run(job, "@caanet-train-nobody-listens-here") == 0
    assert "cannot connect" in Path(job.log).read_text()
    assert (tmp_path / "cell" / "evaluation.json").is_file()


def test_killed_job_stops_its_child_which_checkpoints(server, tiny_cache, tmp_path):
    proc, address = server
    out = tmp_path / "cell"
    job = make_job(tiny_cache, out, "atrous-att-multi_task-L3", iterations=100_000, checkpoint_every=100_000)
    client = subprocess.Popen([sys.executable, "-c", "import sys; from caanet import trainserver as t; "
                               f"t.submit(t.TrainJob.from_json(sys.argv[1]), {address!r})", job.to_json()])
    wait_for(lambda: "iteration" in (Path(job.log).read_text() if Path(job.log).exists() else ""), what="training")
    client.send_signal(signal.SIGKILL)  # as Snakemake stops a job: the connection closes
    client.wait(10)
    wait_for(lambda: children_of(proc.pid) == [], timeout=30, what="the child to stop")
    assert (out / "checkpoints" / "last.pt").is_file()  # SIGTERM checkpoints, as in a job's own process
    assert not (out / "evaluation.json").exists()
    assert proc.poll() is None  # the server goes on serving


def test_server_stops_with_the_workflow_that_started_it(tmp_path):
    code = ("import sys; from caanet import trainserver as t; p, a = t.start_server(); print(p.pid, flush=True)")
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    pid = int(parent.stdout.split()[0])
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             timeout=60, what="the orphaned server to stop")


def test_changed_code_file_is_noticed(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    files = {str(path): path.stat().st_mtime_ns}
    assert trainserver.changed_files(files) == []
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert trainserver.changed_files(files) == [str(path)]
    path.unlink()
    assert trainserver.changed_files(files) == [str(path)]


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(enabled=True, local_exec=True, deployment=""), None),
        (dict(enabled=False, local_exec=True, deployment=""), "train_server: false"),
        (dict(enabled=True, local_exec=False, deployment=""), "cluster executor"),
        (dict(enabled=True, local_exec=True, deployment="CONDA"), "deployment CONDA"),
    ],
)
def test_when_a_workflow_starts_a_server(kw, why):
    got = trainserver.server_unwanted(**kw)
    assert got == why if why is None else why in got


def test_changed_code_refuses_new_jobs_but_lets_running_ones_finish(server, tiny_cache, tmp_path):
    proc, address = server
    long_job = make_job(tiny_cache, tmp_path / "long", "atrous-att-multi_task-L3", iterations=100_000,
                        checkpoint_every=100_000)
    client = subprocess.Popen([sys.executable, "-c", "import sys; from caanet import trainserver as t; "
                               f"t.submit(t.TrainJob.from_json(sys.argv[1]), {address!r})", long_job.to_json()])
    try:
        wait_for(lambda: "iteration" in (Path(long_job.log).read_text() if Path(long_job.log).exists() else ""),
                 what="training")
        source = Path(trainserver.__file__)
        st = source.stat()
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # "edited" (content unchanged)
        try:
            with pytest.raises(ServerUnavailable, match="caanet code changed since the server started"):
                trainserver.submit(make_job(tiny_cache, tmp_path / "new"), address)
        finally:
            os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert proc.poll() is None and len(children_of(proc.pid)) == 1  # the running job goes on
    finally:
        client.kill()
        client.wait(10)
    wait_for(lambda: children_of(proc.pid) == [], timeout=30, what="the child to stop")
