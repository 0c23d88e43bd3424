"""A cheap fingerprint of a dataset folder the workflow reads in place (``source: local``).

Snakemake decides what to rerun from file modification times, and a folder given as an input only
changes its own mtime when entries are added or removed: a label fixed in ``meta.csv`` or a WAV
replaced by a corrected one of the same name would go unnoticed, and the index, the features and
every trained cell would silently keep the old data. The workflow therefore uses a *manifest* as the
index rule's input: one JSON file listing, for every file the reader can use, its relative path, size
in bytes and ``mtime_ns``. It is refreshed at every parse of the Snakefile (a ``stat`` per file, no
hashing, so a 30 GB dataset costs a directory walk) and rewritten only when it differs, so an
untouched dataset plans nothing and a changed file reruns exactly what depends on the dataset.

Files tracked: ``meta.csv``, everything below ``evaluation_setup/``, and everything below each
top-level folder that ``meta.csv`` names audio in (``audio/`` in the DCASE layouts); when ``meta.csv``
cannot be read, every file of the folder (the index job then reports what is wrong). Hidden files
(``.DS_Store``, ``._name`` of macOS, editors' swap files) are not tracked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from caanet.errors import DatasetError
from caanet.io import write_text_atomic

MANIFEST_FORMAT = 1


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, sub: str) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every non-hidden regular file below ``root/sub``."""
    out = []
    start = root / sub if sub else root
    if start.is_file():
        st = start.stat()
        return [(sub, st.st_size, st.st_mtime_ns)]
    for dirpath, dirnames, filenames in os.walk(start, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in filenames:
            if _hidden(name):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # a dangling link, or removed while walking
                continue
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def _audio_folders(meta: Path) -> list[str] | None:
    """Top-level folders of meta.csv's first column (None when meta.csv cannot be read)."""
    try:
        text = meta.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    folders = set()
    for line in text.splitlines()[1:]:
        name = line.split("\t", 1)[0].strip()
        if name:
            folders.add(name.split("/", 1)[0] if "/" in name else "")
    if "" in folders:  # audio beside meta.csv: track the whole folder
        return None
    return sorted(folders)


def dataset_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a dataset folder: ``{"format", "root", "files": [[path, size, mtime_ns], ...]}``.

    ``root`` is stored absolute (the index job reads the dataset from it). ``files`` is sorted by
    path. Raises DatasetError when ``root`` is not a folder.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    folders = _audio_folders(root / "meta.csv")
    if folders is None:
        files = _walk(root, "")
    else:
        files = []
        for sub in ["meta.csv", "evaluation_setup", *folders]:
            if (root / sub).exists():
                files += _walk(root, sub)
    files = sorted(set(files))
    return {"format": MANIFEST_FORMAT, "root": str(root), "files": [list(f) for f in files]}


def refresh_manifest(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Write :func:`dataset_manifest` of ``root`` to ``path`` if it differs from what is there.

    Returns True when the file was (re)written. An unchanged manifest keeps its mtime, so Snakemake
    plans nothing for an untouched dataset. The write is atomic (temporary name, then rename).
    """
    text = json.dumps(dataset_manifest(root), indent=0, separators=(",", ":")) + "\n"
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text_atomic(path, text)
    return True
