"""Unix sockets that admit only their own user (the training server's, :mod:`caanet.trainserver`).

Two guards, so that neither is the only one: the socket is a file in a folder only its user may
enter (mode 0700, made by :func:`private_socket_path`; the socket file itself is 0600), and each
end asks the kernel who is at the other end (``SO_PEERCRED``, :func:`peer_credentials`) and talks
only to its own uid. A Linux abstract socket (``@name``) has no permissions at all, which is why
none is used. :func:`peer_closed` says whether the other end has gone, without waiting.

Only the standard library is imported: the training client must stay light.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import tempfile

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
#: The longest socket path the kernel takes (``sun_path`` holds 108 bytes with the final NUL).
MAX_PATH_BYTES = 107


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of the connected Unix socket ``sock``.

    The kernel records them when the connection is made (``SO_PEERCRED``); the peer cannot choose
    them. Raises OSError on a socket that is not a connected Unix socket.
    """
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def private_socket_path(prefix: str = "caanet-") -> str:
    """A path for a new socket, ``<folder>/socket``, in a new folder that only this user may enter.

    The folder (mode 0700, :func:`tempfile.mkdtemp`) is made under ``$XDG_RUNTIME_DIR`` when that
    is this user's private folder, else under the temporary folder (``$TMPDIR``, ``/tmp``); under
    ``/tmp`` when the path would be longer than the kernel takes (:data:`MAX_PATH_BYTES`). The caller
    removes the folder (:func:`remove_socket`). Raises RuntimeError when no folder gives a short
    enough path.
    """
    bases = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _is_private_folder(runtime):
        bases.append(runtime)
    bases += [tempfile.gettempdir(), "/tmp"]
    for base in bases:
        # mkdtemp adds 8 characters after the prefix
        if len(os.fsencode(os.path.join(base, prefix + "x" * 8, "socket"))) <= MAX_PATH_BYTES:
            return os.path.join(tempfile.mkdtemp(prefix=prefix, dir=base), "socket")
    raise RuntimeError(f"no folder for a socket gives a path of at most {MAX_PATH_BYTES} bytes (tried {bases})")


def check_private_folder(folder: str | os.PathLike) -> None:
    """Raise RuntimeError naming ``folder`` unless it is a folder owned by this user that no other
    user may enter, read or write (no group or other permission bits)."""
    st = os.stat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{folder}: not a folder")
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{folder}: owned by uid {st.st_uid}, not by this user (uid {os.getuid()})")
    if st.st_mode & 0o077:
        raise RuntimeError(f"{folder}: mode {stat.S_IMODE(st.st_mode):04o} lets other users in (needs 0700)")


def _is_private_folder(folder: str) -> bool:
    try:
        check_private_folder(folder)
    except (OSError, RuntimeError):
        return False
    return True


def listen_private(path: str, backlog: int = 64) -> socket.socket:
    """A Unix stream socket listening on ``path`` (mode 0600) inside a private folder.

    Raises RuntimeError when ``path``'s folder is not private (:func:`check_private_folder`), OSError
    when the socket cannot be bound (e.g. ``path`` exists).
    """
    if not os.path.isabs(path):
        raise RuntimeError(f"{path!r}: a socket path must be absolute")
    check_private_folder(os.path.dirname(path))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old)
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    return listener


def remove_socket(path: str) -> None:
    """Remove the socket ``path`` and, when empty, its folder (nothing happens for either that is gone)."""
    for remove, target in ((os.unlink, path), (os.rmdir, os.path.dirname(path))):
        try:
            remove(target)
        except OSError:
            pass


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end of the connected stream socket ``sock`` has closed it (or reset it).

    Does not wait and consumes nothing (``MSG_PEEK``). Meant for a protocol in which the peer sends
    nothing more while it waits: data it sent and has not closed after counts as it being there.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    ready = poller.poll(0)
    events = ready[0][1] if ready else 0
    if not events:
        return False
    if events & (select.POLLHUP | select.POLLRDHUP | select.POLLERR | select.POLLNVAL):
        return True
    try:  # readable: data or end of file (readable now, so a socket timeout does not make this wait)
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
