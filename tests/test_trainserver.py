"""The pre-forked training server (caanet.trainserver): a child trains exactly what the job's own
process would; a refused or unreachable server falls back to the job's process, saying why; a
killed job stops its child (which checkpoints); a client gone before or after the server's answer
costs only its own job and publishes nothing; only the server's own user reaches it, and the
client talks only to its own user's server; the server stops with its parent."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from caanet import localsocket, trainserver
from caanet.paths import CELL_FILES
from caanet.spec import CellSpec
from caanet.training import Abandoned, train_cell
from caanet.training.config import TrainConfig
from caanet.training.outputs import PUBLISH_ORDER, publish_outputs
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
    proc, address = trainserver.start_server(results=tmp_path, code="code-1", log=tmp_path / "server.log")
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
    assert trainserver.run(job, str(tmp_path / "nobody-listens-here")) == 0
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
    code = ("import sys; from caanet import trainserver as t; p, a = t.start_server(results=sys.argv[1]); "
            "print(p.pid, flush=True)")
    parent = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                            check=True)
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


# --- a client gone before or after the server's answer (issue 18, item 2) -----------------------


def send_request(address: str, request: dict) -> socket.socket:
    """Send a job request as ``trainserver.submit`` does (header, stdin/stdout/stderr, JSON); return the socket."""
    payload = json.dumps(request).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    socket.send_fds(sock, [struct.pack("!I", len(payload))], [0, 1, 2])
    sock.sendall(payload)
    return sock


def request_for(job: TrainJob) -> dict:
    return {"job": json.loads(job.to_json()), "executable": os.path.realpath(sys.executable)}


def outputs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_client_gone_before_the_answer_costs_only_its_job(server, tiny_cache, tmp_path):
    proc, address = server
    gone = tmp_path / "gone"
    # killed after it sent its request, while the server still imports torch and the job waits in its backlog
    send_request(address, request_for(make_job(tiny_cache, gone, "atrous-att-multi_task-L3"))).close()
    assert trainserver.submit(make_job(tiny_cache, tmp_path / "next"), address) == 0  # the server survived
    assert (tmp_path / "next" / "evaluation.json").is_file()
    assert "left before its job started" in (tmp_path / "server.log").read_text()
    wait_for(lambda: children_of(proc.pid) == [], timeout=30, what="no child left")
    assert outputs_in(gone) == []  # no child ran the vanished job
    assert proc.poll() is None


def test_client_gone_while_its_child_trains_publishes_nothing(server, tiny_cache, tmp_path):
    proc, address = server
    out = tmp_path / "cell"
    job = make_job(tiny_cache, out, "atrous-att-multi_task-L3", iterations=600, checkpoint_every=100_000)
    client = subprocess.Popen([sys.executable, "-c", "import sys; from caanet import trainserver as t; "
                               f"t.submit(t.TrainJob.from_json(sys.argv[1]), {address!r})", job.to_json()])
    wait_for(lambda: "iteration" in (Path(job.log).read_text() if Path(job.log).exists() else ""), what="training")
    (child,) = children_of(proc.pid)
    # the server cannot stop the child (as when it died, the orphan): the child trains to the end
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        client.kill()  # Snakemake records the job as failed
        client.wait(10)
        wait_for(lambda: child.status() == psutil.STATUS_ZOMBIE, timeout=120, what="the child to finish")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert outputs_in(out) == ["checkpoints"]  # the end-of-training checkpoint, no outputs, no staging folder
    assert "the job's client has gone (before its outputs were published)" in Path(job.log).read_text()
    wait_for(lambda: children_of(proc.pid) == [], timeout=30, what="the child to be reaped")
    assert trainserver.submit(make_job(tiny_cache, tmp_path / "next"), address) == 0  # the server survived
    assert proc.poll() is None


def test_outputs_are_published_only_while_the_job_is_wanted(tmp_path):
    assert PUBLISH_ORDER[-1] == CELL_FILES["evaluation"] and sorted(PUBLISH_ORDER) == sorted(CELL_FILES.values())
    out = tmp_path / "cell"

    def staged() -> Path:
        staging = out / ".outputs-test"
        staging.mkdir(parents=True)
        for name in ("a.csv", "b.json"):
            (staging / name).write_text(name)
        return staging

    staging = staged()
    with pytest.raises(Abandoned, match=r"cell: the job's client has gone \(before its outputs were published\)"):
        publish_outputs(staging, out, ["a.csv", "b.json"], lambda: False)
    assert outputs_in(out) == [".outputs-test"] and outputs_in(staging) == ["a.csv", "b.json"]

    answers = iter([True, False])  # gone while the files were moved: what was moved goes again
    with pytest.raises(Abandoned, match="while its outputs were published"):
        publish_outputs(staging, out, ["a.csv", "b.json"], lambda: next(answers))
    assert outputs_in(out) == [".outputs-test"]

    staging.rmdir()
    moved = []
    publish_outputs(staged(), out, ["a.csv", "b.json"], lambda: moved.append(outputs_in(out)) or True)
    assert (out / "b.json").read_text() == "b.json"
    assert moved == [[".outputs-test"], [".outputs-test", "a.csv", "b.json"]]  # asked before and after the moves


def test_abandoned_job_leaves_only_its_checkpoint_and_resumes_to_the_evaluation(tiny_cache, tmp_path):
    spec = CellSpec.from_id("cnn_pool-max-joint", dataset="tiny", seed=3)
    cfg = TrainConfig.from_dict(SETTINGS)
    with pytest.raises(Abandoned):
        train_cell(tiny_cache, spec, cfg, tmp_path / "cell", threads=1, still_wanted=lambda: False)
    assert outputs_in(tmp_path / "cell") == ["checkpoints"]
    lines: list[str] = []
    whole = train_cell(tiny_cache, spec, cfg, tmp_path / "whole", threads=1)
    resumed = train_cell(tiny_cache, spec, cfg, tmp_path / "cell", threads=1, log=lines.append)
    assert not any(": iteration " in line for line in lines)  # nothing trained again
    assert outputs_in(tmp_path / "cell") == sorted(CELL_FILES.values())
    assert resumed["mean_all"] == whole["mean_all"]


# --- only the server's own user (issue 18, item 1) -----------------------------------------------


def nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root (CI runs the tests as root)")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to act as a second user")


def forked_as(user: pwd.struct_passwd, body) -> tuple[int, int]:
    """Fork a child that becomes ``user`` (setgroups, setgid, setuid) and runs ``body(write)``, where
    ``write(obj)`` sends a JSON line to the parent; return the child's pid and the read end of its pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plain system calls only, then os._exit
        status = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            body(lambda obj: os.write(w, json.dumps(obj).encode() + b"\n"))
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": repr(exc)}).encode() + b"\n")
        finally:
            os._exit(status)
    os.close(w)
    return pid, r


def results_of(pid: int, r: int) -> list[dict]:
    with os.fdopen(r, "rb") as fh:
        lines = fh.read().splitlines()
    os.waitpid(pid, 0)
    return [json.loads(line) for line in lines]


def test_socket_is_a_file_in_a_folder_only_its_user_may_enter(server):
    proc, address = server
    folder = os.stat(os.path.dirname(address))
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    sock = os.stat(address)
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    trainserver.stop_server(proc)
    assert not os.path.exists(os.path.dirname(address))  # socket and folder gone with the server


def test_server_listens_only_in_a_private_folder(tmp_path):
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(RuntimeError, match="mode 0755 lets other users in"):
        localsocket.listen_private(str(tmp_path / "open" / "socket"))
    assert not (tmp_path / "open" / "socket").exists()


def test_stranger_cannot_reach_the_socket(server):
    _, address = server
    pid, r = forked_as(nobody(), lambda write: write({"connect": _try_connect(address)}))
    assert results_of(pid, r) == [{"connect": "PermissionError"}]


def _try_connect(address: str) -> str:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


def test_stranger_is_dropped_without_a_word_even_through_an_open_folder(server, tiny_cache, tmp_path):
    proc, address = server
    user = nobody()
    # the second guard alone: the folder and socket opened to everyone (a mistake, or another
    # tool's folder), the stranger reaches the socket and sends a job the server would take from its
    # own user: the right interpreter and code hash, a log in a folder only the server's user may write
    os.chmod(os.path.dirname(address), 0o755)
    os.chmod(address, 0o777)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    job = make_job(Path("/STRANGER-TEXT.h5"), private / "cell")
    request = request_for(job)

    def stranger(write):
        reply = b""
        try:
            sock = send_request(address, request)
            sock.settimeout(30)
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):  # closed with the request unread
            pass
        write({"reply": reply.decode(errors="replace")})

    pid, r = forked_as(user, stranger)
    assert results_of(pid, r) == [{"reply": ""}]  # not a byte: no interpreter, no reason
    assert outputs_in(private) == []  # no child ran, no log was written
    assert f"dropped a connection from uid {user.pw_uid}" in (tmp_path / "server.log").read_text()
    assert "STRANGER-TEXT" not in (tmp_path / "server.log").read_text()  # the request was not even read
    assert children_of(proc.pid) == [] and proc.poll() is None
    assert trainserver.submit(make_job(tiny_cache, tmp_path / "mine"), address) == 0  # its own user is served


def test_client_sends_nothing_to_a_socket_of_another_user(tiny_cache, tmp_path):
    user = nobody()
    folder = Path(localsocket.private_socket_path("caanet-test-")).parent
    os.chown(folder, user.pw_uid, user.pw_gid)
    address = str(folder / "socket")

    def impostor(write):  # a stranger's "training server" where the job looks for its own
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        os.chmod(address, 0o777)
        listener.listen(1)
        write({"listening": True})
        listener.settimeout(30)
        conn, _ = listener.accept()
        conn.settimeout(10)
        got = conn.recv(65536)
        write({"received": len(got)})

    pid, r = forked_as(user, impostor)
    try:
        reader = os.fdopen(r, "rb")
        assert json.loads(reader.readline()) == {"listening": True}
        job = make_job(tiny_cache, tmp_path / "cell")
        with pytest.raises(ServerUnavailable, match=f"served by uid {user.pw_uid}, not by this user"):
            trainserver.submit(job, address)
        assert json.loads(reader.readline()) == {"received": 0}  # not the job, not its stdin/stdout/stderr
    finally:
        reader.close()
        os.waitpid(pid, 0)
        localsocket.remove_socket(address)


def test_request_carries_the_jobs_absolute_paths_and_nothing_of_its_process(tmp_path, monkeypatch):
    address = localsocket.private_socket_path("caanet-test-")
    listener = localsocket.listen_private(address)
    got = {}

    def fake_server():
        conn, _ = listener.accept()
        head, fds, _, _ = socket.recv_fds(conn, 4, 3)
        for fd in fds:
            os.close(fd)
        (size,) = struct.unpack("!I", head)
        payload = b""
        while len(payload) < size:
            payload += conn.recv(size - len(payload))
        got.update(json.loads(payload))
        conn.sendall(b'{"accepted": false, "reason": "test"}\n')
        conn.close()

    thread = threading.Thread(target=fake_server)
    thread.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAANET_SECRET_OF_THE_CLIENT", "1")
    try:
        with pytest.raises(ServerUnavailable, match="test"):
            trainserver.submit(make_job(Path("cache.h5"), Path("cells/x")), address)
    finally:
        thread.join(30)
        listener.close()
        localsocket.remove_socket(address)
    assert set(got) == {"job", "executable"}  # no working directory, no environment
    assert got["job"]["cache"] == str(tmp_path / "cache.h5")
    assert got["job"]["out_dir"] == str(tmp_path / "cells" / "x")
    assert got["job"]["log"] == str(tmp_path / "cells" / "x.log")


@pytest.mark.parametrize("field", ["out_dir", "log"])
def test_job_writing_outside_the_results_folder_is_refused(server, tiny_cache, tmp_path, tmp_path_factory, field):
    _, address = server
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    job = make_job(tiny_cache, tmp_path / "cell")
    job = TrainJob(**{**json.loads(job.to_json()), field: str(elsewhere / "x")})
    with pytest.raises(ServerUnavailable, match=f"the job's {field} .* is outside the workflow's results folder"):
        trainserver.submit(job, address)
    assert outputs_in(elsewhere) == [] and outputs_in(tmp_path / "cell") == []


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "server error"),
    (b"[1, 2]", "malformed request"),
    (json.dumps({"job": {"cache": "x"}, "executable": "y"}).encode(), "malformed request"),
])
def test_malformed_request_is_answered_and_the_server_goes_on(server, tiny_cache, tmp_path, payload, reason):
    proc, address = server
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    socket.send_fds(sock, [struct.pack("!I", len(payload))], [0, 1, 2])
    sock.sendall(payload)
    sock.settimeout(60)
    with sock.makefile("rb") as reader:
        answer = json.loads(reader.readline())
    sock.close()
    assert answer["accepted"] is False and reason in answer["reason"]
    assert trainserver.submit(make_job(tiny_cache, tmp_path / "cell"), address) == 0 and proc.poll() is None
