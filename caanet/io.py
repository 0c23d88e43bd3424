"""Atomic file output: write to a temporary name beside the target, rename when complete.

A killed job therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

# Every text file caanet reads (meta.csv, split files, indexes, layers.csv, catalogues, JSON) is
# decoded with this: UTF-8, and a byte-order mark (spreadsheet tools write one) is dropped.
TEXT_ENCODING = "utf-8-sig"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    ``suffix`` defaults to the target's suffix, so libraries that look at extensions still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=(target.suffix if suffix is None else suffix) + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies),
    # so results are readable by collaborators on a shared cluster file system.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, obj, **kwargs) -> None:
    kwargs.setdefault("indent", 1)
    write_text_atomic(target, json.dumps(obj, **kwargs) + "\n")


def write_csv_atomic(target: str | os.PathLike, df, **kwargs) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, **kwargs)


# errno of a lock that the file system cannot take: ENOLCK (NFS without lockd), ENOSYS/EOPNOTSUPP
_NO_LOCK_ERRNOS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})


def require_columns(df, columns, source) -> None:
    """Raise :class:`caanet.errors.ResultsError` naming ``source`` when the frame ``df`` lacks any of
    ``columns`` (the one check behind every results CSV caanet reads)."""
    from caanet.errors import ResultsError

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{source}: missing column(s) {missing} (has {list(df.columns)})")


def read_results_csv(path: str | os.PathLike, what: str, *, columns=(), empty=None, **read_csv_kw):
    """Read a results CSV (``pandas.read_csv(path, **read_csv_kw)``) and check its ``columns``.

    ``what`` names the content in errors ("the claims", "a predictions CSV"). An empty file returns
    ``empty`` when one is given; an unreadable or empty file otherwise raises
    :class:`caanet.errors.ResultsError` naming ``path``, as does a missing column.
    """
    import pandas as pd

    from caanet.errors import ResultsError

    try:
        df = pd.read_csv(path, **read_csv_kw)
    except pd.errors.EmptyDataError as exc:
        if empty is not None:
            return empty
        raise ResultsError(f"{path}: cannot read {what}: {exc}") from exc
    except (OSError, pd.errors.ParserError) as exc:
        raise ResultsError(f"{path}: cannot read {what}: {exc}") from exc
    require_columns(df, columns, path)
    return df


def read_results_json(path: str | os.PathLike) -> dict:
    """Read a results JSON file (a cell's ``evaluation.json``) as a dict.

    Raises :class:`caanet.errors.ResultsError` naming ``path`` when the file is missing, unreadable,
    not JSON, or not a JSON object.
    """
    from caanet.errors import ResultsError

    try:
        obj = json.loads(Path(path).read_text(encoding=TEXT_ENCODING))
    except FileNotFoundError:
        raise ResultsError(f"{path}: evaluation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ResultsError(f"{path}: not a JSON object (got {type(obj).__name__})")
    return obj


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` is HDF5 failing to lock a file (``unable to lock file, errno = 37``), as
    opposed to a missing, truncated or foreign file."""
    return isinstance(exc, OSError) and (exc.errno in _NO_LOCK_ERRNOS or "unable to lock file" in str(exc).lower())


def _lock_error(path, exc: BaseException, why: str):
    from caanet.errors import HDF5LockError

    return HDF5LockError(
        f"{path}: HDF5 cannot lock this file ({exc}); {why}. The file system has no working file locks "
        "(NFS without lockd, some cluster scratch mounts): set HDF5_USE_FILE_LOCKING=FALSE in the "
        "environment of the job (export it before snakemake; docs/cluster.md)"
    )


def open_hdf5(path: str | os.PathLike, mode: str = "r", *, owned: bool = True):
    """``h5py.File(path, mode)`` that also works where the file system cannot lock files.

    HDF5 (>= 1.10) locks every file it opens; on NFS without lockd and some cluster scratch mounts
    that fails with ``OSError: unable to lock file, errno = 37``. Files the workflow owns need no lock:
    it writes each file under a temporary name it just created and renames it when complete, and never
    modifies a file after that. So a write (``mode`` other than ``"r"``) opens with ``locking=False``
    (h5py >= 3.5), and a read whose lock fails is retried with ``locking=False`` when ``owned`` is
    true. Where that is impossible (h5py < 3.5, or ``owned=False``: a file another program may be
    writing), :class:`caanet.errors.HDF5LockError` names the file and ``HDF5_USE_FILE_LOCKING=FALSE``.
    Any other OSError (missing, truncated, not HDF5) is raised unchanged for the caller to report.
    """
    import h5py

    if mode != "r" and owned:
        try:
            return h5py.File(path, mode, locking=False)
        except (TypeError, ValueError):  # h5py < 3.5 (no locking argument), or an HDF5 library too
            pass                         # old for it (ValueError): the default open below
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if not is_lock_error(exc):
            raise
        first = exc
    if not owned:
        raise _lock_error(path, first, "caanet does not own this file, so it will not open it without a lock") from first
    try:
        return h5py.File(path, mode, locking=False)
    except (TypeError, ValueError):
        raise _lock_error(path, first, f"h5py {h5py.__version__} with HDF5 {h5py.version.hdf5_version} cannot "
                          "open without a lock (needs h5py >= 3.5 and HDF5 >= 1.10.7 or 1.12.1)") from first
    except OSError as exc:
        if is_lock_error(exc):
            raise _lock_error(path, exc, "opening without a lock failed too") from exc
        raise
