"""Zip archives verified and extracted safely (the archives of :mod:`caanet.data.download`).

* :func:`md5sum`/:func:`verify_md5`: a file's MD5, streamed in chunks;
* :func:`extract_zip`: an archive whose extracted tree would differ from its member list (``../``,
  an absolute path, a backslash, a duplicate, a file and a folder of one path, a symbolic link or
  device) is refused before anything is written, naming the member (:func:`check_members`);
  truncated or corrupt archives raise :class:`~caanet.errors.DownloadError`; extraction goes to a
  temporary folder beside the destination and each file is moved into place, and a marker file
  records the completed extraction of that archive and MD5 (:func:`extracted_files`) so a second
  run does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from caanet import __version__
from caanet.errors import DownloadError
from caanet.io import TEXT_ENCODING, write_json_atomic

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Bytes read at a time: a file's MD5, a member's extraction, an HTTP answer (caanet.data.download)."""
MARKER_DIR = ".caanet-extracted"
"""The folder of ``dest_dir`` holding one marker per completed extraction."""


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def md5sum(path: str | os.PathLike, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The MD5 of a file (lower-case hex), read in chunks so memory stays flat."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, md5: str) -> bool:
    """Whether the file at ``path`` has MD5 ``md5`` (case-insensitive); streamed in chunks."""
    return md5sum(path) == md5.strip().lower()




# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member is a symbolic link (Unix mode bits in the external attributes)."""
    return stat.S_ISLNK(info.external_attr >> 16)


_MEMBER_TYPES = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                 stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


def member_path(archive: str | os.PathLike, info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The relative path of a zip member, exactly as named, or None for an entry naming the root itself.

    Raises :class:`~caanet.errors.DownloadError` naming the archive and member for any name whose
    extracted path would differ from the name itself: an absolute path (``/x``, ``C:x``), a ``..``
    component (``a/../b``), a backslash (a separator on Windows, a character on POSIX), an empty or
    ``.`` component (``a//b``, ``a/./b``); for a member that is not a regular file or folder (a
    symbolic link, a device, a pipe: zipfile cannot create them, the DCASE archives hold none, and a
    link could point outside); and for a name reserved for caanet's own bookkeeping.
    """
    name = info.filename
    where = f"{archive}: member {name!r}"
    if "\\" in name:
        raise DownloadError(f"{where} has a backslash in its name (a folder separator on Windows, a "
                            "character elsewhere): the extracted tree would not match it; nothing was extracted")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"{where} has an absolute path; nothing was extracted")
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        raise DownloadError(f"{where} escapes the destination folder ('..'); nothing was extracted")
    kind = _MEMBER_TYPES.get(stat.S_IFMT(info.external_attr >> 16)) if info.create_system == 3 or _is_symlink(info) else None
    if kind is not None:
        raise DownloadError(f"{where} is {kind}, which is not allowed; nothing was extracted")
    if name in ("", "/", "./"):
        return None
    if any(p in ("", ".") for p in parts):
        raise DownloadError(f"{where} has an empty or '.' path component: the extracted path would differ "
                            "from the name; nothing was extracted")
    if parts[0].startswith(".caanet-"):
        raise DownloadError(f"{where} uses a name reserved for caanet's bookkeeping; nothing was extracted")
    return PurePosixPath(*parts)


def _case_insensitive(folder: Path) -> bool:
    """Whether ``folder``'s file system folds case (macOS, Windows defaults)."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix=".caanet-case-", dir=folder) as fh:
        probe = Path(fh.name)
        return Path(probe.parent, probe.name.upper()).exists()


def check_members(archive: str | os.PathLike, infos: Sequence[zipfile.ZipInfo],
                  dest_dir: str | os.PathLike | None = None) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """``(info, relative path)`` of every member, after checking that extracting them gives exactly the
    tree the member list names; raises :class:`~caanet.errors.DownloadError` naming the member otherwise.

    Beyond :func:`member_path` (each name on its own): two members of one path (a duplicate, which
    would silently overwrite the first), a file and a folder of one path (``a`` and ``a/b``), two
    names differing only in case where ``dest_dir``'s file system folds case, and a member whose path
    in ``dest_dir`` is already taken by the other kind (a folder where a file goes, or a file where a
    folder goes). Called before anything is written.
    """
    archive = Path(archive)
    members = [(info, rel) for info in infos if (rel := member_path(archive, info)) is not None]
    fold = dest_dir is not None and Path(dest_dir).is_dir() and _case_insensitive(Path(dest_dir))
    key = (lambda r: r.as_posix().casefold()) if fold else (lambda r: r.as_posix())
    files: dict[str, zipfile.ZipInfo] = {}
    folders: dict[str, zipfile.ZipInfo] = {}  # folders named, or implied by a member below them
    for info, rel in members:
        where = f"{archive}: member {info.filename!r}"
        k = key(rel)
        if info.is_dir():
            if k in files:
                raise DownloadError(f"{where} is a folder of the same path as file member "
                                    f"{files[k].filename!r}; nothing was extracted")
            folders.setdefault(k, info)
        else:
            if k in files:
                raise DownloadError(f"{where} appears twice (first as {files[k].filename!r}): the second would "
                                    "overwrite the first; nothing was extracted")
            if k in folders:
                raise DownloadError(f"{where} is a file of the same path as folder member "
                                    f"{folders[k].filename!r}; nothing was extracted")
            files[k] = info
        for parent in list(rel.parents)[:-1]:
            pk = key(parent)
            if pk in files:
                raise DownloadError(f"{where} lies below {files[pk].filename!r}, which is a file; "
                                    "nothing was extracted")
            folders.setdefault(pk, info)
    if dest_dir is not None:
        dest_dir = Path(dest_dir)
        for info, rel in members:
            where = f"{archive}: member {info.filename!r}"
            target = dest_dir.joinpath(*rel.parts)
            if not info.is_dir() and target.is_dir() and not target.is_symlink():
                raise DownloadError(f"{where} is a file but {target} is a folder; nothing was extracted")
            if info.is_dir() and target.is_file():
                raise DownloadError(f"{where} is a folder but {target} is a file; nothing was extracted")
            for parent in list(rel.parents)[:-1]:
                if dest_dir.joinpath(*parent.parts).is_file():
                    raise DownloadError(f"{where} needs folder {dest_dir.joinpath(*parent.parts)}, which is a file; "
                                        "nothing was extracted")
    return members


def _marker_path(dest_dir: Path, archive_name: str) -> Path:
    return dest_dir / MARKER_DIR / (archive_name + ".json")


def extracted_files(dest_dir: str | os.PathLike, archive_name: str, md5: str) -> list[Path] | None:
    """The files of a completed extraction of ``archive_name`` with ``md5`` into ``dest_dir``.

    None when there is no marker, it records another MD5, it is unreadable, or a recorded file is
    missing (the extraction then has to be done again).
    """
    dest_dir = Path(dest_dir)
    marker = _marker_path(dest_dir, archive_name)
    try:
        record = json.loads(marker.read_text(encoding=TEXT_ENCODING))
        if record.get("md5") != md5.lower():
            return None
        files = [dest_dir.joinpath(*PurePosixPath(m).parts) for m in record["files"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files if all(f.is_file() for f in files) else None


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip archive (truncated or corrupt?): {exc}") from exc


def _check_space(archive: Path, infos: Sequence[zipfile.ZipInfo], dest_dir: Path) -> None:
    need = sum(i.file_size for i in infos)
    free = shutil.disk_usage(dest_dir).free
    if need > free:
        raise DownloadError(f"{archive}: needs {need} bytes to extract but {dest_dir} has {free} free")


def _extract_members(archive: Path, zf: zipfile.ZipFile, members: Iterable[tuple[zipfile.ZipInfo, PurePosixPath]],
                     tmp: Path) -> None:
    """Write the members under ``tmp``; a corrupt member raises DownloadError naming it."""
    for info, rel in members:
        out = tmp.joinpath(*rel.parts)
        if info.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise DownloadError(f"{archive}: member {info.filename!r} is corrupt or unreadable "
                                f"(truncated archive or CRC error?): {exc}") from exc


def _move_into_place(archive: Path, tmp: Path, dest_dir: Path) -> list[Path]:
    """Move every file under ``tmp`` to the same relative place under ``dest_dir`` (atomic per file)."""
    dest_real = dest_dir.resolve()
    moved: list[Path] = []
    for folder, _dirs, names in os.walk(tmp):
        for name in names:
            src = Path(folder) / name
            target = dest_dir / src.relative_to(tmp)
            if not target.parent.resolve().is_relative_to(dest_real):
                raise DownloadError(f"{archive}: {target.parent} leads outside {dest_dir} (a symbolic link?); "
                                    "refusing to extract there")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                raise DownloadError(f"{archive}: cannot put file {target} in place of an existing folder")
            os.replace(src, target)
            moved.append(target)
    return sorted(moved)


def extract_zip(archive: str | os.PathLike, dest_dir: str | os.PathLike, *, md5: str | None = None) -> list[Path]:
    """Extract ``archive`` into ``dest_dir`` safely and idempotently; return the extracted files.

    Every member is checked (see :func:`check_members`) before anything is written. Members are
    extracted into a temporary folder beside the destination and then moved into place, so a
    killed extraction leaves no half-written file under a final name; a marker in
    ``dest_dir/.caanet-extracted/`` records the archive's name, MD5 (``md5`` when given, else
    computed) and files, and a second call with the same archive returns at once.
    Truncated or corrupt archives raise :class:`~caanet.errors.DownloadError` naming the archive.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if md5 is None:
        if not archive.is_file():
            raise DownloadError(f"{archive}: archive not found")
        md5 = md5sum(archive)
    md5 = md5.lower()
    done = extracted_files(dest_dir, archive.name, md5)
    if done is not None:
        log.info("%s: already extracted into %s", archive.name, dest_dir)
        return done
    with _open_zip(archive) as zf:
        infos = zf.infolist()
        members = check_members(archive, infos, dest_dir)
        _check_space(archive, infos, dest_dir)
        tmp = dest_dir / f".caanet-extract-{archive.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _extract_members(archive, zf, members, tmp)
            files = _move_into_place(archive, tmp, dest_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_json_atomic(_marker_path(dest_dir, archive.name), {
        "archive": archive.name, "md5": md5, "n_files": len(files),
        "files": [f.relative_to(dest_dir).as_posix() for f in files], "caanet_version": __version__,
    })
    log.info("%s: extracted %d files into %s", archive.name, len(files), dest_dir)
    return files
