"""A pre-forked training server: local ``train_cell`` jobs without the start-up of a fresh Python.

A default-preset cell trains in 1-6 s, but a fresh job process spends about 1.5 s more on
``import torch`` and ``caanet``, and on the interpreter's teardown: with 264 such jobs that is a
third of ``snakemake all``. For local runs the workflow therefore starts one server process
(:func:`start_server`, from the Snakefile's ``onstart``) that imports torch and the training code
once and then forks a fresh child per job, the way the zygote of Android or a pre-forking web
server does (``multiprocessing``'s forkserver is the same idea, but private to one parent).

Each ``train_cell`` job stays a Snakemake job of its own, with its own target, params, log and
benchmark: its script (``workflow_scripts/train_cell.py``) is a thin client (:func:`run`) that
sends the job (:class:`TrainJob`) and its stdin/stdout/stderr over a Unix socket and waits for the
child's exit status. The child runs exactly what the job would have run in its own process
(:func:`run_job`), seeds included, so the outputs are the same (``tests/test_trainserver.py``).

Only its own user reaches the server (:mod:`caanet.localsocket`): the socket is a file in a folder
of mode 0700, and the server drops, without a word, a connection whose peer has another uid
(``SO_PEERCRED``); the client in turn sends nothing to a socket served by another uid. From a
request the child takes only what the job could have done itself: its paths, made absolute by the
client (the child keeps the server's working directory and environment), and it writes only below
the workflow's results folder (``--results``): a job whose ``out_dir`` or ``log`` is elsewhere is refused.

What the client gives up: the benchmark file's ``s`` is the job's wall time as before, but its
``cpu_time`` and ``max_rss`` are the client's; the trained child's CPU seconds and peak RSS are the
job log's last line. Killing the job (Snakemake on Ctrl-C, a ``runtime`` limit) closes the
connection, and the server sends the child SIGTERM, which checkpoints and stops as in a job
process. A client gone before the server took its job (killed while it waited in the backlog) costs
no child; a client gone while its child ran costs only its own job: the child writes its outputs
to a staging folder and moves them into the cell folder only while its client still waits
(:func:`caanet.training.outputs.publish_outputs`), so nothing lands after Snakemake recorded the job
as failed. The server stops with the workflow (``onsuccess``/``onerror``) or when its parent dies.

The client trains in its own process instead, saying why in the log, when no server was started
(cluster executors, ``--use-conda``, ``train_server: false``, not Linux), when the server cannot be
reached, is another user's, runs another Python, holds training code older than the files on disk,
or the job writes outside the server's results folder.

Only the standard library (and :mod:`caanet.localsocket`, which imports nothing else) is imported at
module level: the client must stay light.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

from caanet import localsocket

#: The config key ``train_server``'s default (the schema documents it: tests/test_schema.py).
ENABLED_BY_DEFAULT = True
#: Environment variable through which the workflow tells its jobs the server's socket address.
ADDRESS_ENV = "CAANET_TRAIN_SERVER"
#: Modules the server imports before it forks: what a training job would import itself.
PRELOAD = ("torch", "numpy", "h5py", "caanet.training.trainer", "caanet.workflow_support")
_HEADER = struct.Struct("!I")  # length of the JSON request that follows the fds


class ServerUnavailable(RuntimeError):
    """The server cannot take this job (the message says why); the job trains in its own process."""


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One ``train_cell`` job as plain data (JSON), built by the rule's script from ``snakemake``.

    ``cache``: the log-mel cache (HDF5); ``spec``: ``CellSpec.to_dict()``; ``settings``: the
    preset's training settings (``workflow_support.train_settings``); ``out_dir``: the cell's
    folder; ``threads``: torch intra-op threads; ``code``: the workflow's hash of the training code;
    ``log``: the job's log file; ``options``: ``train_cell``'s keyword options
    (``workflow_support.train_options``).
    """

    cache: str
    spec: dict
    settings: dict
    out_dir: str
    threads: int
    code: str
    log: str
    options: dict

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def absolute(self) -> "TrainJob":
        """The same job with ``cache``, ``out_dir`` and ``log`` made absolute against the working directory."""
        return dataclasses.replace(self, cache=os.path.abspath(self.cache), out_dir=os.path.abspath(self.out_dir),
                                   log=os.path.abspath(self.log))

    @classmethod
    def from_json(cls, text: str) -> "TrainJob":
        return cls(**json.loads(text))


def run_job(job: TrainJob, still_wanted=None) -> dict:
    """Train and evaluate the job's cell (``caanet.training.train_cell``); return evaluation.json.

    The same code runs in a server's child and in a job's own process. The job's log gets every
    line, and an error's traceback, before the error is re-raised. ``still_wanted``: a callable
    asked before the outputs are moved into the cell folder (a server's child: its client still
    waits); a no raises ``caanet.training.Abandoned``, nothing published.
    """
    from caanet.spec import CellSpec
    from caanet.training import TrainConfig, train_cell
    from caanet.workflow_support import logged

    gc.freeze()  # what is alive now (modules) is never collected: no final sweep over it at exit
    with logged(job.log, "train_cell") as log:
        return train_cell(
            job.cache,
            CellSpec.from_dict(job.spec),
            TrainConfig.from_dict(job.settings),
            Path(job.out_dir),
            threads=job.threads,
            code_version=job.code,
            log=log,
            still_wanted=still_wanted,
            **job.options,
        )


# --- the client (a train_cell job) -------------------------------------------------------------


def run(job: TrainJob, address: str | None = None) -> int:
    """Run ``job`` on the workflow's training server if there is one, else in this process.

    ``address``: the server's socket (default: ``$CAANET_TRAIN_SERVER``). Returns the exit status
    for the job script (0 on success); a failure in this process raises as before.
    """
    address = os.environ.get(ADDRESS_ENV) if address is None else address
    if address:
        try:
            return submit(job, address)
        except ServerUnavailable as exc:
            _append_log(job.log, f"training server {address!r} not used ({exc}); training in the job's own process")
    run_job(job)
    return 0


def submit(job: TrainJob, address: str, *, connect_timeout: float = 10.0) -> int:
    """Send ``job`` with this process's stdin/stdout/stderr to the server; wait for the child's exit.

    ``address``: the server's socket path. The job's paths are sent absolute (:meth:`TrainJob.absolute`);
    nothing else of this process (working directory, environment) is. Returns the child's exit status
    (non-zero when training failed; its traceback is then on this process's stderr and in the job
    log). Raises :class:`ServerUnavailable` when the server is not there, is served by another user
    (nothing is sent to it) or refuses the job (another Python, stale code, paths outside its results
    folder), before anything ran.
    """
    if not sys.platform.startswith("linux"):
        raise ServerUnavailable("the training server runs on Linux only")
    if not os.path.isabs(address):
        raise ServerUnavailable("the address is not an absolute socket path")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    reader = None
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            raise ServerUnavailable(f"cannot connect: {exc.strerror or exc}") from None
        _, uid, _ = localsocket.peer_credentials(sock)
        if uid != os.getuid():
            raise ServerUnavailable(f"the socket is served by uid {uid}, not by this user (uid {os.getuid()}); "
                                    "nothing was sent to it")
        request = json.dumps({"job": dataclasses.asdict(job.absolute()),
                              "executable": os.path.realpath(sys.executable)}).encode()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
            sock.sendall(request)
        except OSError as exc:
            raise ServerUnavailable(f"cannot send the job: {exc.strerror or exc}") from None
        sock.settimeout(None)  # the server answers once it has imported torch; then training takes what it takes
        reader = sock.makefile("rb")
        try:
            first = _read_message(reader)
        except OSError as exc:  # the server went before it took the job: no child ran it
            raise ServerUnavailable(f"the connection broke before the server took the job: {exc.strerror or exc}")
        if first is None:
            raise ServerUnavailable("the server closed the connection before accepting the job")
        if not first.get("accepted"):
            raise ServerUnavailable(first.get("reason", "refused"))
        try:
            done = _read_message(reader)
        except OSError:
            done = None
        if done is None:
            _append_log(job.log, f"training server {address!r} stopped while the job ran (child {first.get('pid')})")
            return 1
        _append_log(
            job.log,
            f"trained in the server's child {first.get('pid')}: {done['cpu_seconds']:.1f} s CPU, "
            f"{done['max_rss_mb']:.0f} MB peak RSS, exit status {done['exit']} (the benchmark file's "
            "cpu_time and max_rss are the job client's)",
        )
        return int(done["exit"])
    finally:  # both, or the descriptor stays open: a child still running for this job sees its client gone
        if reader is not None:
            reader.close()
        sock.close()


def _read_message(reader) -> dict | None:
    line = reader.readline()
    return json.loads(line) if line else None


def _append_log(path: str, line: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(time.strftime("%H:%M:%S") + " INFO " + line + "\n")


# --- the server --------------------------------------------------------------------------------


def code_files() -> dict[str, int]:
    """``{path: mtime_ns}`` of every module from the ``caanet`` package this process has loaded
    (the server itself included: run as ``python -m caanet.trainserver`` it is ``__main__``)."""
    import caanet

    root = os.path.dirname(os.path.realpath(caanet.__file__)) + os.sep
    out = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.realpath(path).startswith(root):
            try:
                out[path] = os.stat(path).st_mtime_ns
            except OSError:
                out[path] = -1
    return out


def changed_files(files: dict[str, int]) -> list[str]:
    """The paths of ``files`` (:func:`code_files`) whose modification time is no longer the recorded one."""
    changed = []
    for path, mtime in files.items():
        try:
            now = os.stat(path).st_mtime_ns
        except OSError:
            now = -1
        if now != mtime:
            changed.append(path)
    return changed


class _Server:
    """The event loop: accept jobs, fork a child per job, report its exit; single-threaded, so that
    every fork happens in a process with one thread (no lock held by another thread). Nothing one
    connection does (a stranger, a malformed request, a client gone at any point) stops it."""

    def __init__(self, listener: socket.socket, parent: int | None, code: str | None, results: str):
        self.listener = listener
        self.parent = parent
        self.code = code
        self.results = os.path.realpath(results)
        self.files = code_files()
        self.executable = os.path.realpath(sys.executable)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.children: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (connection, pid)
        self.watched: set[socket.socket] = set()  # connections of running children, watched for EOF
        self.stopping = False

    def loop(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                kind, data = key.data
                try:
                    if kind == "accept":
                        self._accept()
                    elif kind == "child":
                        self._reap(key.fileobj)
                    elif kind == "client":
                        self._client_event(key.fileobj, data)
                except Exception:  # noqa: BLE001 - one job's trouble (in the log) must not stop the others
                    _say("error while serving a job (the server goes on):\n" + traceback.format_exc().rstrip())
            if self.parent is not None and os.getppid() != self.parent:
                self.stopping = True  # the workflow is gone: stop its jobs too
        self.shutdown()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return  # the client gave up between the listener's readiness and accept
        try:
            self._take(conn)
        except BaseException:
            conn.close()
            raise

    def _take(self, conn: socket.socket) -> None:
        peer_pid, uid, _ = localsocket.peer_credentials(conn)
        if uid != os.getuid():  # nothing read, nothing answered: a stranger learns nothing
            _say(f"dropped a connection from uid {uid} (pid {peer_pid}): not this server's user")
            conn.close()
            return
        conn.settimeout(10.0)
        fds: list[int] = []
        try:
            head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
            if len(head) != _HEADER.size or len(fds) != 3:
                raise ValueError("malformed request")
            (size,) = _HEADER.unpack(head)
            payload = b""
            while len(payload) < size:
                chunk = conn.recv(size - len(payload))
                if not chunk:
                    raise ValueError("truncated request")
                payload += chunk
            job, reason = self._job(json.loads(payload))
            if reason:
                with _quiet():
                    _send(conn, {"accepted": False, "reason": reason})
                conn.close()  # running children finish; later jobs are refused the same way
                return
            if localsocket.peer_closed(conn):  # killed while it waited in the backlog: its job is failed already
                _say(f"the client (pid {peer_pid}) of {job.out_dir} left before its job started; not run")
                conn.close()
                return
            pid = self._fork(job, fds, conn)
        except (OSError, ValueError) as exc:
            with _quiet():
                _send(conn, {"accepted": False, "reason": f"server error: {exc}"})
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (conn, pid)
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", None))
        self.selector.register(conn, selectors.EVENT_READ, ("client", pid))
        self.watched.add(conn)
        with _quiet():  # a client gone meanwhile: the selector reports its EOF and the child is stopped
            _send(conn, {"accepted": True, "pid": pid})

    def _job(self, request) -> tuple[TrainJob | None, str | None]:
        """The request's job and why it is refused (None: taken). The job's own user reads the reason."""
        try:
            job = TrainJob(**request["job"])
        except (KeyError, TypeError) as exc:
            return None, f"malformed request: {exc}"
        if request.get("executable") != self.executable:
            return job, f"the server runs {self.executable}, the job {request.get('executable')}"
        if self.code is not None and job.code != self.code:
            return job, "the job's training-code hash differs from the server's"
        for name in ("out_dir", "log"):
            path = getattr(job, name)
            if not isinstance(path, str) or not os.path.isabs(path):
                return job, f"the job's {name} {path!r} is not an absolute path"
            if not _below(path, self.results):
                return job, f"the job's {name} {path} is outside the workflow's results folder {self.results}"
        changed = changed_files(self.files)
        if changed:
            return job, f"caanet code changed since the server started: {', '.join(sorted(changed)[:3])}"
        return job, None

    def _fork(self, job: TrainJob, fds: list[int], conn: socket.socket) -> int:
        pid = os.fork()
        if pid:
            return pid
        # the child: one job, then os._exit (no teardown of the server's state). It keeps the
        # server's working directory and environment, and its copy of the connection: to publish
        # its outputs only while the client still waits (run_job's still_wanted)
        status = 1
        try:
            self.selector.close()
            self.listener.close()
            for pidfd, (other, _) in self.children.items():
                other.close()
                os.close(pidfd)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            for target, fd in zip((0, 1, 2), fds):
                os.dup2(fd, target)
            run_job(job, still_wanted=lambda: not localsocket.peer_closed(conn))
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child reports everything, then exits
            traceback.print_exc()
        finally:
            with _quiet():
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _reap(self, pidfd: int) -> None:
        conn, pid = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        if conn in self.watched:
            self.watched.discard(conn)
            self.selector.unregister(conn)
        with _quiet():
            _send(conn, {
                "exit": os.waitstatus_to_exitcode(status),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_mb": usage.ru_maxrss / 1024,
            })
        conn.close()

    def _client_event(self, conn: socket.socket, pid: int) -> None:
        if localsocket.peer_closed(conn):  # the job was killed: stop its child as the job process would have been
            _say(f"the client of child {pid} has gone; stopping the child (SIGTERM)")
            with _quiet():
                os.kill(pid, signal.SIGTERM)
            self.watched.discard(conn)
            self.selector.unregister(conn)
        else:  # the protocol has the client send nothing more; drop what it sent
            with _quiet():
                conn.recv(4096, socket.MSG_DONTWAIT)

    def shutdown(self) -> None:
        for pidfd, (conn, pid) in list(self.children.items()):
            with _quiet():
                os.kill(pid, signal.SIGTERM)
        for pidfd, (conn, pid) in list(self.children.items()):
            with _quiet():
                os.waitpid(pid, 0)
            conn.close()
        self.listener.close()


def _below(path: str, root: str) -> bool:
    """Whether ``path`` (symbolic links resolved) is ``root`` (resolved already) or below it."""
    path = os.path.realpath(path)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _say(line: str) -> None:
    """A line in the server's log (its stderr)."""
    print(time.strftime("%H:%M:%S") + " " + line, file=sys.stderr, flush=True)


class _quiet:
    """Suppress OSError (a peer gone, a child already reaped)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, OSError)


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def serve(address: str, *, results: str | os.PathLike, parent: int | None = None, code: str | None = None,
          ready_fd: int | None = None) -> None:
    """Listen on ``address``, import :data:`PRELOAD`, then fork a child per job until stopped.

    ``address``: a socket path in a folder only this user may enter (RuntimeError otherwise,
    :func:`caanet.localsocket.listen_private`); the socket and, when empty, its folder are removed
    when the server stops. The socket is bound before the imports, so the first jobs wait in its
    backlog rather than fall back. ``results``: the workflow's results folder; a job whose ``out_dir``
    or ``log`` is outside it is refused. ``parent``: stop when this process (the Snakemake that started
    the server) is gone. ``code``: the workflow's hash of the training code; a job with another hash
    is refused, as is any job once a loaded ``caanet`` file changed on disk. ``ready_fd``: a pipe to
    write one line to once the socket is bound, then close. SIGTERM stops the server and its jobs.
    """
    listener = localsocket.listen_private(address)
    try:
        if ready_fd is not None:
            os.write(ready_fd, b"listening\n")
            os.close(ready_fd)
        gc.disable()  # importing torch allocates ~10^6 objects: no collections in between
        try:
            import importlib

            for name in PRELOAD:
                importlib.import_module(name)
        finally:
            gc.enable()
        gc.freeze()  # keep the imported objects out of every child's collections (and copy-on-write)
        server = _Server(listener, parent, code, os.fspath(results))
        signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(server, "stopping", True))
        server.loop()
    finally:
        listener.close()
        localsocket.remove_socket(address)


def server_unwanted(*, enabled: bool, local_exec: bool, deployment: str = "") -> str | None:
    """Why a workflow run should not start a server (``None``: start one).

    ``enabled``: the config's ``train_server``; ``local_exec``: Snakemake runs the jobs on this
    machine; ``deployment``: Snakemake's software deployment methods (a job in a conda env or a
    container runs another Python than the server's).
    """
    if not enabled:
        return "train_server: false"
    if not local_exec:
        return "jobs run on a cluster executor"
    if deployment:
        return f"jobs run with software deployment {deployment}"
    if not sys.platform.startswith("linux"):
        return "the training server runs on Linux only"
    return None


def start_for_workflow(*, enabled: bool, local_exec: bool, deployment: str, code: str,
                       log: str | Path) -> subprocess.Popen | None:
    """The Snakefile's ``onstart``: start a server when :func:`server_unwanted` says nothing against it,
    and point this process's jobs at it (``$CAANET_TRAIN_SERVER``). Its jobs write below the
    workflow's results folder (:data:`caanet.paths.RESULTS` in the working directory). Returns the
    server, or None (no server wanted, or it failed to start: said on stderr; every job then trains
    in its own process).
    """
    from caanet import paths

    if server_unwanted(enabled=enabled, local_exec=local_exec, deployment=deployment) is not None:
        return None
    try:
        proc, address = start_server(results=os.path.abspath(paths.RESULTS), code=code, log=log)
    except (OSError, RuntimeError) as exc:
        print(f"caanet: no training server ({exc}); each train_cell job imports torch itself", file=sys.stderr)
        return None
    os.environ[ADDRESS_ENV] = address
    return proc


def start_server(*, results: str | os.PathLike, code: str | None = None, log: str | Path | None = None,
                 timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start a server for this process's jobs; return it and its address (a socket path in a new
    folder only this user may enter, :func:`caanet.localsocket.private_socket_path`).

    ``results``: the folder below which its jobs may write (:func:`serve`). Returns once the server
    listens (jobs connecting from then on wait in its backlog while it imports torch). The caller
    (the Snakefile's ``onstart``) puts the address in ``$CAANET_TRAIN_SERVER`` for the jobs it
    starts, and calls :func:`stop_server` when the workflow ends. Raises RuntimeError naming the log
    when the server does not start within ``timeout`` s.
    """
    address = localsocket.private_socket_path("caanet-train-")
    ready_r, ready_w = os.pipe()
    try:
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "a", encoding="utf-8") if log else subprocess.DEVNULL  # noqa: SIM115 - held by the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "caanet.trainserver", "--address", address, "--results", os.fspath(results),
                 "--parent", str(os.getpid()), "--ready-fd", str(ready_w)] + (["--code", code] if code else []),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=os.environ.copy(), pass_fds=(ready_w,),
            )
        finally:
            if log:
                out.close()
    except BaseException:
        os.close(ready_r)
        localsocket.remove_socket(address)
        raise
    finally:
        os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], timeout)
        line = os.read(ready_r, 64) if ready else b""
    finally:
        os.close(ready_r)
    if not line.startswith(b"listening"):
        stop_server(proc)
        raise RuntimeError(f"the training server did not start (see {log or 'its stderr'})")
    return proc, address


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a server from :func:`start_server` (SIGTERM; its running children are stopped too) and
    remove its socket and the socket's folder, should the server not have done so itself."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    args = list(proc.args)
    if "--address" in args[:-1]:
        localsocket.remove_socket(args[args.index("--address") + 1])


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the socket's path, in a folder of mode 0700")
    parser.add_argument("--results", required=True, help="the workflow's results folder (jobs write only below it)")
    parser.add_argument("--parent", type=int, help="stop when this process id is gone")
    parser.add_argument("--code", help="the workflow's hash of the training code (jobs with another are refused)")
    parser.add_argument("--ready-fd", type=int, help="a pipe to write one line to once listening")
    args = parser.parse_args(argv)
    serve(args.address, results=args.results, parent=args.parent, code=args.code, ready_fd=args.ready_fd)


if __name__ == "__main__":
    main()
