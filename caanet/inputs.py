"""The recordings named on ``caanet predict``'s command line: files, folders, glob patterns, ``-``.

* A name that exists is used as it is, whatever it holds (``*``, ``?``, ``[``, ``:``, spaces,
  newlines, a leading ``-`` after ``--``, bytes that are not UTF-8) and whatever it is (a regular
  file, a symbolic link to one, a FIFO, ``/dev/stdin``): libsndfile decides whether it is audio.
* ``-`` is standard input (:data:`STDIN`; a file named ``-`` is ``./-``).
* A folder is searched recursively, following symbolic links (each folder once, so a link loop
  ends). A regular file whose suffix is an audio format's (:data:`AUDIO_SUFFIXES`, any case) and
  whose name does not start with ``.`` is a recording: if libsndfile cannot read it, that is an
  error. Any other regular file (no suffix, another suffix, a hidden file such as macOS's
  ``._x.wav``) is a recording when libsndfile opens it (a WAV named ``take1``), else it is
  *skipped*: named on stderr, never ignored in silence, and not an error. FIFOs, sockets, devices
  and broken links inside a folder are skipped without being opened (reading a FIFO would wait).
* A name that does not exist but holds ``*``, ``?`` or ``[`` is a glob pattern (``**`` recursive);
  each match is taken as if it had been named.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field
from typing import Iterable

from caanet.audio import probe_audio

STDIN = "-"
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
                            ".caf", ".w64", ".rf64", ".au", ".snd"})
"""Suffixes of formats libsndfile reads; a file found in a folder with another suffix is probed."""
_GLOB_CHARS = frozenset("*?[")


@dataclass
class AudioInputs:
    """``paths``: the recordings, in order (as named; folder and glob contents sorted; duplicates
    dropped); ``problems``: ``(item, message)`` for names that give nothing (errors); ``skipped``:
    ``(path, reason)`` for files found in folders that are not audio libsndfile reads (notes)."""

    paths: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def _is_expected_audio(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def _folder_entry(path: str, name: str, out: AudioInputs, found: list) -> None:
    """Classify one directory entry of a folder search (see the module docstring)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            out.skipped.append((path, f"a broken symbolic link (to {os.readlink(path)})"))
        else:
            out.problems.append((path, f"{path}: cannot read ({e.strerror})"))
        return
    if not stat.S_ISREG(st.st_mode):
        out.skipped.append((path, "not a regular file (a FIFO, socket or device is read only when named)"))
    elif _is_expected_audio(name):
        found.append(path)
    else:
        reason = probe_audio(path)
        if reason is None:
            found.append(path)
        else:
            out.skipped.append((path, f"not audio libsndfile reads ({reason})"))


def search_folder(folder: str, out: AudioInputs) -> list[str]:
    """The recordings under ``folder`` (sorted), adding skipped files and unreadable subfolders to ``out``."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(e: OSError) -> None:
        out.problems.append((e.filename, f"{e.filename}: cannot list the folder ({e.strerror})"))

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(root)
        except OSError as e:
            unreadable(e)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree, or a folder linked twice
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in files:
            _folder_entry(os.path.join(root, name), name, out, found)
    return sorted(found)


def expand_audio_paths(items: Iterable[str]) -> AudioInputs:
    """The recordings named by ``items`` (files, folders, glob patterns, ``-``): see the module docstring.

    A folder with no recording and a pattern or name matching nothing are problems (errors); a
    name is never normalised (``a//b``, ``./x`` stay as given, so results name files as the user did).
    """
    out = AudioInputs()
    paths: list[str] = []

    def take(item: str, *, from_glob: bool = False) -> None:
        if os.path.isdir(item):
            skipped_before = len(out.skipped)
            found = search_folder(item, out)
            if not found:
                n_skipped = len(out.skipped) - skipped_before
                out.problems.append((item, f"{item}: the folder holds no audio libsndfile reads"
                                           + (f" ({n_skipped} other file(s) skipped)" if n_skipped else "")))
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif os.path.islink(item):
            out.problems.append((item, f"{item}: a broken symbolic link (to {os.readlink(item)})"))
        elif not from_glob and _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                out.problems.append((item, f"{item}: no file matches this pattern"))
            for m in matches:
                take(m, from_glob=True)
        else:
            out.problems.append((item, f"{item}: no such file or folder"))

    for item in items:
        if item == STDIN:
            paths.append(STDIN)
        else:
            take(item)
    out.paths = list(dict.fromkeys(paths))
    return out


__all__ = ["AUDIO_SUFFIXES", "STDIN", "AudioInputs", "expand_audio_paths", "search_folder"]
