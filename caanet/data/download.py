"""Download the DCASE Task 1B development sets: verified, resumable, safely extracted.

The archives (URL, size, MD5) are listed in the packaged ``dcase_remote_files.csv``.
:func:`fetch_dataset` downloads every archive of one dataset into ``dest_root/downloads/``,
verifies size and MD5, extracts it into ``dest_root/`` and returns the folder holding
``meta.csv``; the Snakemake rule ``download_dataset`` calls it.

pooch is not used: its ``HTTPDownloader`` (pooch 1.9) always starts from byte 0 into a temporary
file that it deletes on failure, so a 1.7 GB archive cut at 90 % cannot be resumed with an HTTP
Range request; the standard library's urllib does that in a few lines.

Guarantees:

* a file appears under its final name only after its size and MD5 are verified; a file whose MD5
  is wrong is moved aside (``<name>.md5-mismatch``) and never used;
* an interrupted download (cut connection, killed job) resumes from ``<name>.part`` with
  ``Range: bytes=<n>-``; the body is placed where its ``Content-Range`` says, whatever the status
  (some mirrors answer 200 with Content-Range and the remaining bytes); a server that ignores
  Range (200 without Content-Range) restarts cleanly;
* a server whose file has another size than the catalogue's (``Content-Length`` of a whole file,
  the length in ``Content-Range``) fails at once with a size mismatch naming the URL and both
  sizes, rather than as a cut connection;
* a server that compresses the file on the fly although caanet asks for it as is
  (``Accept-Encoding: identity``; ``Content-Encoding: gzip`` or ``deflate``, a misconfigured mirror)
  has its answer undone chunk by chunk, so ``<name>.part`` only ever holds the file's own bytes
  (never compressed ones to resume from) and the MD5 is checked on them; its compressed answer to a
  Range request cannot be resumed, so the download restarts from byte 0; any other coding (``br``,
  ``zstd``, ...) fails at once naming the coding and the URL, keeping nothing of that answer;
* transient failures (connection reset or cut, timeouts, HTTP 5xx/408/429) are retried with
  exponential backoff; other HTTP errors (404, 403, ...) fail at once;
* archives are checked and extracted safely and once (:mod:`caanet.data.archive`).
"""

from __future__ import annotations

import csv
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from caanet import __version__
from caanet.data.archive import CHUNK_BYTES, extract_zip, extracted_files, md5sum
from caanet.errors import ConfigError, DownloadError
from caanet.io import TEXT_ENCODING

log = logging.getLogger(__name__)

REMOTE_TABLE = Path(__file__).with_name("dcase_remote_files.csv")
TABLE_COLUMNS = ("dataset", "content_type", "filename", "url", "bytes", "md5")
PART_SUFFIX = ".part"
QUARANTINE_SUFFIX = ".md5-mismatch"
DOWNLOADS_DIR = "downloads"
TRANSIENT_HTTP_CODES = frozenset({408, 429})
LOG_EVERY_SECONDS = 30.0
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_USER_AGENT = f"caanet/{__version__} (+urllib)"


# --------------------------------------------------------------------------------------------
# What to download
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One archive to download: its file name, URL, size in bytes and MD5 (lower-case hex)."""

    filename: str
    url: str
    bytes: int
    md5: str
    content_type: str = "archive"

    def __post_init__(self) -> None:
        name = self.filename
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"remote file name {name!r} must be a plain file name (no folders)")
        if not isinstance(self.bytes, int) or isinstance(self.bytes, bool) or self.bytes < 0:
            raise ConfigError(f"remote file {name!r}: bytes must be a non-negative integer, got {self.bytes!r}")
        if not isinstance(self.md5, str) or not _MD5_RE.match(self.md5):
            raise ConfigError(f"remote file {name!r}: md5 must be 32 lower-case hex digits, got {self.md5!r}")
        if not self.url:
            raise ConfigError(f"remote file {name!r}: url is empty")


def _with_base_url(url: str, filename: str, base_url: str | None) -> str:
    """Replace everything before the file name with ``base_url`` (a mirror), if given."""
    if base_url is None:
        return url
    return base_url.rstrip("/") + "/" + filename


def remote_files(
    dataset_key: str, *, base_url: str | None = None, table: str | os.PathLike | None = None
) -> list[RemoteFile]:
    """The archives of ``dataset_key`` listed in ``table`` (default: the packaged CSV), in table order.

    ``base_url`` replaces everything before the file name in each URL (a mirror or a test server).
    An unknown key or a malformed row raises :class:`~caanet.errors.ConfigError` naming the table,
    row and key.
    """
    path = Path(table) if table is not None else REMOTE_TABLE
    try:
        with open(path, newline="", encoding=TEXT_ENCODING) as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: missing column(s) {missing}; expected {list(TABLE_COLUMNS)}")
            rows = list(enumerate(reader, start=2))
    except OSError as exc:
        raise ConfigError(f"cannot read the remote-file table {path}: {exc}") from exc
    out: list[RemoteFile] = []
    for line, row in rows:
        if row["dataset"] != dataset_key:
            continue
        try:
            n_bytes = int(row["bytes"])
        except (TypeError, ValueError):
            raise ConfigError(f"{path}, row {line}: column 'bytes' is {row['bytes']!r}, not an integer") from None
        try:
            out.append(RemoteFile(
                filename=row["filename"], url=_with_base_url(row["url"], row["filename"], base_url),
                bytes=n_bytes, md5=(row["md5"] or "").strip().lower(), content_type=row["content_type"],
            ))
        except ConfigError as exc:
            raise ConfigError(f"{path}, row {line}: {exc}") from None
    if not out:
        known = sorted({row["dataset"] for _, row in rows})
        raise ConfigError(f"dataset key {dataset_key!r} is not in {path}; known keys: {known}")
    return out


def as_remote_file(obj: RemoteFile | Mapping[str, Any], *, base_url: str | None = None) -> RemoteFile:
    """A :class:`RemoteFile` from itself or a config mapping (``filename, md5, bytes``, ``url`` optional).

    ``base_url`` sets the URL of a mapping without ``url`` and replaces the prefix of every URL.
    """
    if isinstance(obj, RemoteFile):
        if base_url is None:
            return obj
        return RemoteFile(obj.filename, _with_base_url(obj.url, obj.filename, base_url), obj.bytes,
                          obj.md5, obj.content_type)
    if not isinstance(obj, Mapping):
        raise ConfigError(f"a remote file must be a RemoteFile or a mapping, got {type(obj).__name__}")
    for key in ("filename", "md5", "bytes"):
        if key not in obj:
            raise ConfigError(f"remote file entry {dict(obj)!r}: key {key!r} is missing")
    url = obj.get("url")
    if not url and base_url is None:
        raise ConfigError(f"remote file {obj['filename']!r}: needs 'url' or a base_url")
    return RemoteFile(
        filename=str(obj["filename"]), url=_with_base_url(url or "", str(obj["filename"]), base_url),
        bytes=obj["bytes"], md5=str(obj["md5"]).strip().lower(),
        content_type=str(obj.get("content_type", "archive")),
    )


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal, a log line every ``LOG_EVERY_SECONDS`` otherwise, or nothing."""

    def __init__(self, name: str, total: int, initial: int, enabled: bool) -> None:
        self.name, self.total, self.done = name, total, initial
        self.bar = None
        self.enabled = enabled
        self.last_log = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=name, leave=False)
        elif enabled:
            log.info("%s: downloading from byte %d of %d", name, initial, total)

    def reset(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(done)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last_log >= LOG_EVERY_SECONDS:
            self.last_log = time.monotonic()
            pct = 100.0 * self.done / self.total if self.total else 100.0
            log.info("%s: %d of %d bytes (%.1f%%)", self.name, self.done, self.total, pct)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            log.info("%s: %d of %d bytes received", self.name, self.done, self.total)


# --------------------------------------------------------------------------------------------
# Downloading one file
# --------------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (connection cut or reset, timeout, 5xx)."""


class _RangeIgnored(Exception):
    """The server's answer to a Range request cannot be appended (HTTP 416, wrong Content-Range)."""


def _quarantine(path: Path, remote: RemoteFile, actual: str) -> DownloadError:
    """Move a file with the wrong MD5 aside and return the error to raise."""
    bad = path.with_name(remote.filename + QUARANTINE_SUFFIX)
    os.replace(path, bad)
    return DownloadError(
        f"{remote.filename}: MD5 mismatch (expected {remote.md5}, got {actual}); "
        f"the data was moved to {bad} and will not be used; the next run downloads it again from "
        f"{remote.url}"
    )


def _content_range_start(header: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes a-b/n`` header, or None if unparsable."""
    return parse_content_range(header)[0]


def parse_content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, complete length)`` of a ``Content-Range`` header (RFC 9110 14.4):
    ``bytes a-b/n`` -> ``(a, n)``, ``bytes a-b/*`` -> ``(a, None)``, ``bytes */n`` (a 416's) ->
    ``(None, n)``; ``(None, None)`` when absent or unparsable."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", header or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return first, total


def _size_mismatch(remote: RemoteFile, served: int) -> DownloadError:
    return DownloadError(
        f"{remote.filename}: size mismatch: {remote.url} serves {served} bytes, the catalogue "
        f"({REMOTE_TABLE.name}) lists {remote.bytes}; this is another file than the catalogue's "
        "(a mirror's base_url pointing at another version?), not a cut connection"
    )


DECODED_CODINGS = ("gzip", "x-gzip", "deflate")
"""HTTP content codings a response may come with although caanet asks for ``identity``: undone."""


class _Inflater:
    """Undo one content coding (RFC 9110 8.4.1) chunk by chunk: gzip (RFC 1952; several members in a
    row are one stream, as ``gzip -d`` reads them) or deflate (the zlib format of RFC 1950 it names,
    or the raw deflate of RFC 1951 some servers send instead, told apart by the first bytes)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.gzip = coding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(self._wbits)
        self._head = b""  # deflate: the first bytes, until zlib or raw is decided

    def decode(self, data: bytes) -> bytes:
        if not self.gzip and self._head is not None:
            self._head += data
            if len(self._head) < 2:
                return b""
            b0, b1 = self._head[0], self._head[1]
            if not (b0 & 0x0F == 8 and (b0 << 8 | b1) % 31 == 0):  # no zlib header: raw deflate
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            data, self._head = self._head, None
        out = [self._obj.decompress(data)]
        while self.gzip and self._obj.eof and self._obj.unused_data:  # the next gzip member
            rest = self._obj.unused_data
            self._obj = zlib.decompressobj(self._wbits)
            out.append(self._obj.decompress(rest))
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """Whether the stream ended where its format says it ends (a cut stream does not)."""
        return self._head is None and self._obj.eof if not self.gzip else self._obj.eof


class _Decoder:
    """The identity bytes of a response body sent with ``Content-Encoding: <codings>`` (each coding of
    :data:`DECODED_CODINGS` undone, the last applied first); ``identity`` is no coding."""

    def __init__(self, codings: Sequence[str]) -> None:
        self.inflaters = [_Inflater(c) for c in reversed(codings)]

    def decode(self, data: bytes) -> bytes:
        for inflater in self.inflaters:
            data = inflater.decode(data)
        return data

    @property
    def complete(self) -> bool:
        return all(i.complete for i in self.inflaters)


def content_codings(header: str | None) -> list[str]:
    """The content codings of a ``Content-Encoding`` header, in the order they were applied, lower
    case, without ``identity``: ``"gzip, br"`` -> ``["gzip", "br"]``, absent -> ``[]``."""
    return [c for c in (part.strip().lower() for part in (header or "").split(",")) if c and c != "identity"]


def _decoder_for(remote: RemoteFile, header: str | None) -> _Decoder | None:
    """None for a body sent as is; a decoder for one compressed on the fly with codings caanet can
    undo; DownloadError naming the coding and URL for any other (nothing of that body is kept)."""
    codings = content_codings(header)
    if not codings:
        return None
    unknown = [c for c in codings if c not in DECODED_CODINGS]
    if unknown:
        raise DownloadError(
            f"{remote.filename}: {remote.url} sent the file compressed with Content-Encoding {header!r} "
            f"although caanet asked for it as is (Accept-Encoding: identity); caanet undoes only "
            f"{', '.join(DECODED_CODINGS)}, not {', '.join(repr(c) for c in unknown)}, so nothing of that answer "
            "was kept: serve the archives without a Content-Encoding (a mirror compressing files on the fly) "
            "or point base_url elsewhere"
        )
    return _Decoder(codings)


def _open(remote: RemoteFile, offset: int, timeout: float):
    """Send the GET (with ``Range`` when resuming) and return the response; sort the failures."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in TRANSIENT_HTTP_CODES:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        if exc.code == 416:
            total = parse_content_range(exc.headers.get("Content-Range") if exc.headers else None)[1]
            if total is not None and total != remote.bytes:
                raise _size_mismatch(remote, total) from exc
            raise _RangeIgnored(f"HTTP 416 for Range bytes={offset}-") from exc
        raise DownloadError(f"{remote.filename}: HTTP {exc.code} {exc.reason} from {remote.url}") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _receive(remote: RemoteFile, part: Path, timeout: float, progress: _Progress) -> None:
    """One attempt: append the rest of the file to ``part`` (or restart it if Range was ignored)."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(remote, offset, timeout)
    with response:
        status = response.status
        expected = response.headers.get("Content-Length")
        expected = int(expected) if expected and expected.isdigit() else None
        content_range = response.headers.get("Content-Range")
        encoding = response.headers.get("Content-Encoding")
        decoder = _decoder_for(remote, encoding)
        if decoder is not None:
            # compressed on the fly (a misconfigured server): Content-Length and Content-Range count
            # the compressed bytes, and a range of them cannot be undone without its beginning
            if content_range is not None or status == 206:
                raise _RangeIgnored(f"the server compressed its answer to a Range request (Content-Encoding "
                                    f"{encoding!r}, HTTP {status}), which cannot be resumed")
            if offset:
                log.warning("%s: the server sent the whole file compressed (Content-Encoding %r, HTTP %d); "
                            "restarting from byte 0", remote.filename, encoding, status)
                offset = 0
                progress.reset(0)
            log.warning("%s: %s compresses the file on the fly (Content-Encoding %r) although caanet asked for "
                        "it as is; undoing it, the MD5 is checked on the result", remote.filename, remote.url, encoding)
        elif content_range is not None:
            # where the body starts is what Content-Range says, whatever the status: some mirrors
            # honour Range but answer 200 with Content-Range and only the remaining bytes
            first, total = parse_content_range(content_range)
            if first is None:
                raise _RangeIgnored(f"unusable Content-Range {content_range!r} (HTTP {status})")
            if total is not None and total != remote.bytes:
                raise _size_mismatch(remote, total)
            if first != offset:
                if first != 0:
                    raise _RangeIgnored(f"Content-Range {content_range!r} does not start at {offset}")
                log.warning("%s: the server sent the file from byte 0 (Content-Range %r); restarting",
                            remote.filename, content_range)
                offset = 0
                progress.reset(0)
        elif offset:
            if status == 206:
                raise _RangeIgnored("HTTP 206 without Content-Range")
            log.warning("%s: the server ignored Range (HTTP %d); restarting from byte 0", remote.filename, status)
            offset = 0
            progress.reset(0)
        if decoder is None and content_range is None and expected is not None and expected != remote.bytes:
            raise _size_mismatch(remote, expected)  # the whole file, announced with another size
        received = written = 0  # bytes received; bytes written (the same unless decoded)
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            while True:
                try:
                    chunk = response.read1(CHUNK_BYTES)  # what has arrived: a stall loses nothing
                except (http.client.HTTPException, OSError) as exc:  # socket errors are OSErrors
                    raise _Transient(f"connection lost after {offset + written} bytes: "
                                     f"{type(exc).__name__}: {exc}") from exc
                if not chunk:
                    break
                received += len(chunk)
                if decoder is not None:
                    try:
                        chunk = decoder.decode(chunk)
                    except zlib.error as exc:  # what this answer decoded to may be wrong too: drop it
                        fh.truncate(offset)
                        raise DownloadError(f"{remote.filename}: {remote.url} sent a corrupt {encoding!r} stream "
                                            f"(Content-Encoding) after {offset + written} bytes: {exc}") from exc
                fh.write(chunk)
                written += len(chunk)
                progress.update(len(chunk))
    if expected is not None and received < expected:
        raise _Transient(f"connection closed after {offset + written} bytes ({received} of {expected} "
                         "bytes of the answer)" if decoder is not None else
                         f"connection closed after {offset + received} of {offset + expected} bytes")
    if decoder is not None and not decoder.complete:
        raise _Transient(f"connection closed inside the {encoding!r} stream after {offset + written} bytes")


def _check_complete(remote: RemoteFile, part: Path) -> str:
    """Size then MD5 of a finished ``part``; returns the MD5, raises (and quarantines) when wrong."""
    size = part.stat().st_size
    if size < remote.bytes:
        raise _Transient(f"only {size} of {remote.bytes} bytes received")
    actual = md5sum(part)
    if size > remote.bytes or actual != remote.md5:
        err = _quarantine(part, remote, actual)
        if size != remote.bytes:
            err = DownloadError(f"{_size_mismatch(remote, size)}; {err}")
        raise err
    return actual


def _backoff_seconds(attempt: int, backoff: float, cap: float = 120.0) -> float:
    """Exponential backoff: ``backoff * 2**attempt`` seconds, capped."""
    return min(cap, backoff * (2 ** attempt))


def download_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike,
    *,
    retries: int = 5,
    backoff: float = 2.0,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``remote`` to ``dest_dir/<filename>``, verified; return the path.

    Bytes go to ``<filename>.part``; a ``.part`` left by an interrupted attempt or a killed run is
    resumed with an HTTP Range request (restarted from byte 0 when the server ignores Range).
    Up to ``retries`` transient failures are retried, sleeping ``backoff * 2**k`` seconds.
    The size and MD5 are verified before the rename to the final name. A final file already
    present with the right MD5 is kept as is (no request is made); one with the wrong MD5 is
    moved aside and downloaded again. An MD5 mismatch of the downloaded data raises
    :class:`~caanet.errors.DownloadError` naming the file and both sums, after moving the data to
    ``<filename>.md5-mismatch``.
    """
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    part = dest_dir / (remote.filename + PART_SUFFIX)
    if final.exists():
        actual = md5sum(final)
        if actual == remote.md5:
            log.info("%s: already present and verified", final)
            return final
        log.warning("%s: present with MD5 %s instead of %s; downloading it again", final, actual, remote.md5)
        os.replace(final, final.with_name(remote.filename + QUARANTINE_SUFFIX))
    if part.exists() and part.stat().st_size > remote.bytes:
        log.warning("%s: longer than %d bytes; starting again", part, remote.bytes)
        part.unlink()

    start = part.stat().st_size if part.exists() else 0
    bar = _Progress(remote.filename, remote.bytes, start, progress)
    failures: list[str] = []
    succeeded = False
    try:
        for attempt in range(retries + 1):
            try:
                if not part.exists() or part.stat().st_size < remote.bytes:
                    _receive(remote, part, timeout, bar)
                _check_complete(remote, part)
                succeeded = True
                break
            except _RangeIgnored as exc:
                log.warning("%s: %s; restarting from byte 0", remote.filename, exc)
                part.unlink(missing_ok=True)
                bar.reset(0)
                failures.append(str(exc))
            except _Transient as exc:
                failures.append(str(exc))
                if attempt < retries:
                    wait = _backoff_seconds(attempt, backoff)
                    log.warning("%s: %s; retry %d of %d in %.2f s", remote.filename, exc, attempt + 1, retries, wait)
                    time.sleep(wait)
    finally:
        bar.close()
    if not succeeded:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"{remote.filename}: download from {remote.url} failed after {len(failures)} attempt(s); "
            f"last error: {failures[-1]}; {kept} bytes are kept in {part} and the next run resumes from them"
        )
    os.replace(part, final)
    log.info("%s: downloaded and verified (MD5 %s)", final, remote.md5)
    return final


# --------------------------------------------------------------------------------------------
# A whole dataset
# --------------------------------------------------------------------------------------------


def find_dataset_root(extracted: Sequence[Path], where: str) -> Path:
    """The one folder among ``extracted`` files that holds ``meta.csv``; DownloadError otherwise."""
    roots = sorted({p.parent for p in extracted if p.name == "meta.csv"})
    if not roots:
        raise DownloadError(f"{where}: no meta.csv among the {len(extracted)} extracted files; "
                            "is this a DCASE development set?")
    if len(roots) > 1:
        raise DownloadError(f"{where}: several folders hold a meta.csv: {[str(r) for r in roots]}")
    return roots[0]


def fetch_dataset(
    dataset_key: str,
    dest_root: str | os.PathLike,
    *,
    base_url: str | None = None,
    files: Sequence[RemoteFile | Mapping[str, Any]] | None = None,
    n_retries: int = 5,
    progress: bool = True,
    backoff: float = 2.0,
    timeout: float = 60.0,
    keep_archives: bool = True,
    table: str | os.PathLike | None = None,
) -> Path:
    """Download, verify and extract every archive of ``dataset_key``; return the dataset root.

    The archives are those of the remote-file table (``table``, default the packaged CSV) or, when
    given, ``files`` (RemoteFile objects or mappings with ``filename, md5, bytes`` and ``url``
    unless ``base_url`` is set). They are downloaded into ``dest_root/downloads/`` and extracted
    into ``dest_root/``; an archive whose extraction is already recorded with the same MD5 is
    skipped without any network access, so a second call does nothing. ``keep_archives=False``
    deletes each archive once it is extracted. The returned root is the folder that contains
    ``meta.csv`` (e.g. ``dest_root/TUT-urban-acoustic-scenes-2018-mobile-development``).
    """
    if files is not None:
        remotes = [as_remote_file(f, base_url=base_url) for f in files]
    else:
        remotes = remote_files(dataset_key, base_url=base_url, table=table)
    if not remotes:
        raise ConfigError(f"dataset {dataset_key!r}: the list of files to download is empty")
    dest_root = Path(dest_root)
    downloads = dest_root / DOWNLOADS_DIR
    extracted: list[Path] = []
    for remote in remotes:
        done = extracted_files(dest_root, remote.filename, remote.md5)
        if done is None:
            archive = download_file(remote, downloads, retries=n_retries, backoff=backoff,
                                    progress=progress, timeout=timeout)
            done = extract_zip(archive, dest_root, md5=remote.md5)
            if not keep_archives:
                archive.unlink()
        else:
            log.info("%s: already downloaded and extracted", remote.filename)
        extracted.extend(done)
    return find_dataset_root(extracted, f"dataset {dataset_key!r} in {dest_root}")
