"""Test helpers: a local HTTP file server with scripted failures, and DCASE-like fixture archives.

The server listens on 127.0.0.1 only, on a free port, in a daemon thread. Each served file can be
scripted to fail: answer 503 for its first requests, cut the connection after some bytes, ignore
Range requests, always answer an error status, or compress the body on the fly with a
Content-Encoding (a misconfigured mirror). Every request is recorded (path, Range header,
status) so tests can assert what the client did.

The archives follow the real DCASE Task 1B development-set layout (a top folder with
``audio/*.wav``, ``meta.csv`` and ``evaluation_setup/fold1_*``), with a few tiny WAV files,
split over ``.doc.zip``, ``.meta.zip`` and ``.audio.1.zip`` like the Zenodo records. They are
byte-for-byte deterministic.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import socket
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
import soundfile as sf

from caanet.data.download import RemoteFile

TOP_FOLDERS = {
    "2018": "TUT-urban-acoustic-scenes-2018-mobile-development",
    "2019": "TAU-urban-acoustic-scenes-2019-mobile-development",
}
# (scene, city, identifier number, segment, device, split)
CLIPS = (
    ("airport", "barcelona", 0, 0, "a", "train"),
    ("airport", "barcelona", 0, 0, "b", "evaluate"),
    ("bus", "helsinki", 1, 2, "a", "train"),
    ("bus", "helsinki", 1, 2, "c", "evaluate"),
)
_ZIP_DATE = (2018, 4, 1, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# Fixture archives
# --------------------------------------------------------------------------------------------


def wav_bytes(seed: int, seconds: float = 0.02, sample_rate: int = 44100) -> bytes:
    """A tiny deterministic 16-bit mono WAV file."""
    rng = np.random.default_rng(seed)
    y = (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def dcase_tree(style: str) -> tuple[str, dict[str, bytes]]:
    """The top folder name and ``{path: bytes}`` of a tiny dataset in the 2018 or 2019 layout."""
    top = TOP_FOLDERS[style]
    files: dict[str, bytes] = {}
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "evaluate": []}
    for i, (scene, city, ident, seg, dev, split) in enumerate(CLIPS):
        name = f"audio/{scene}-{city}-{ident}-{seg}-{dev}.wav"
        files[f"{top}/{name}"] = wav_bytes(i)
        meta.append(f"{name}\t{scene}\t{city}-{ident}\t{dev}")
        splits[split].append((name, scene))
    files[f"{top}/meta.csv"] = ("\n".join(meta) + "\n").encode()
    test = [n for n, _ in splits["evaluate"]]
    if style == "2018":
        setup = {
            "fold1_train.txt": [f"{n}\t{s}" for n, s in splits["train"]],
            "fold1_evaluate.txt": [f"{n}\t{s}" for n, s in splits["evaluate"]],
            "fold1_test.txt": test,
        }
    else:
        setup = {
            "fold1_train.csv": ["filename\tscene_label"] + [f"{n}\t{s}" for n, s in splits["train"]],
            "fold1_evaluate.csv": ["filename\tscene_label"] + [f"{n}\t{s}" for n, s in splits["evaluate"]],
            "fold1_test.csv": ["filename"] + test,
        }
    for name, lines in setup.items():
        files[f"{top}/evaluation_setup/{name}"] = ("\n".join(lines) + "\n").encode()
    files[f"{top}/README.md"] = f"# {top}\nA tiny test fixture.\n".encode()
    files[f"{top}/LICENSE"] = b"Test fixture, no rights reserved.\n"
    return top, files


def zip_bytes(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    """A deterministic deflated zip of ``members`` (names used verbatim, even unsafe ones).

    ``symlinks`` maps member names to link targets, stored as Unix symbolic-link entries.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def dcase_archives(style: str) -> dict[str, bytes]:
    """``{archive file name: zip bytes}``: the doc, meta and one audio archive, named like Zenodo's."""
    top, files = dcase_tree(style)
    parts = {"doc": {}, "meta": {}, "audio.1": {}}
    for path, data in files.items():
        rel = path[len(top) + 1:]
        key = "audio.1" if rel.startswith("audio/") else "doc" if rel in ("README.md", "LICENSE") else "meta"
        parts[key][path] = data
    return {f"{top}.{key}.zip": zip_bytes(members) for key, members in parts.items()}


def content_type_of(filename: str) -> str:
    return "documentation" if ".doc." in filename else "meta" if ".meta." in filename else "audio"


def remote_for(filename: str, data: bytes, base_url: str) -> RemoteFile:
    """The RemoteFile of ``data`` served as ``filename`` under ``base_url`` (its own size and MD5)."""
    return RemoteFile(filename=filename, url=f"{base_url}/{filename}", bytes=len(data),
                      md5=hashlib.md5(data).hexdigest(), content_type=content_type_of(filename))


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class Script:
    """How the server answers one file."""

    fail_first: int = 0             # answer the first N requests with 503
    cut_after: int | None = None    # send only this many body bytes, then close the connection ...
    cut_times: int = 1              # ... on this many requests (after the failures)
    ignore_range: bool = False      # answer Range requests with 200 and the whole file
    stall_after: int | None = None  # on the first request, send this many bytes, then go silent ...
    stall_seconds: float = 1.0      # ... for this long before closing
    status: int | None = None       # always answer with this status (e.g. 404)
    range_as_200: bool = False      # honour Range, but answer 200 (with Content-Range and the rest)
    no_length: bool = False         # send no Content-Length (the body ends when the connection closes)
    encoding: str | None = None     # a misconfigured server: compress the body on the fly and send this
                                    # Content-Encoding whatever Accept-Encoding says (codings applied in
                                    # order; gzip/x-gzip, deflate; any other name sends the body unchanged)
    raw_deflate: bool = False       # "deflate" as raw deflate without the zlib wrapper (some servers)
    encode_ranges: bool = False     # with encoding: answer Range with 206 and the compressed slice
                                    # (else ignore Range: 200 and the whole file compressed, as nginx does)
    corrupt_encoded: int | None = None  # with encoding: flip the bits of the compressed body from
                                        # this byte on (16 bytes), a corrupt stream


def encode(data: bytes, encoding: str, *, raw_deflate: bool = False) -> bytes:
    """``data`` with the HTTP content codings of ``encoding`` (``"gzip"``, ``"deflate"``,
    ``"gzip, deflate"``: applied in the listed order) applied; unknown codings leave it unchanged."""
    for coding in (c.strip().lower() for c in encoding.split(",")):
        if coding in ("gzip", "x-gzip"):
            data = gzip.compress(data, mtime=0)
        elif coding == "deflate":
            if raw_deflate:
                packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
                data = packer.compress(data) + packer.flush()
            else:
                data = zlib.compress(data)
    return data


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    scripts: dict[str, Script] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "caanet-test/1"
    timeout = 10  # a stuck client cannot hold a handler thread for ever

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        state: _State = self.server.state
        name = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        with state.lock:
            state.counts[name] = n = state.counts.get(name, 0) + 1
            data, script = state.files.get(name), state.scripts.get(name, Script())
        status, start = self._decide(data, script, n, rng)
        with state.lock:
            state.requests.append(Request(name, rng, status))
        if status == 416:  # RFC 9110 15.5.17: the current length in Content-Range
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if status >= 400:
            self.send_error(status)
            return
        body = data[start:]
        ranged = status == 206 or (script.range_as_200 and rng is not None and not script.ignore_range)
        if script.encoding is not None:
            body = encode(body, script.encoding, raw_deflate=script.raw_deflate)
            if script.corrupt_encoded is not None:
                at = script.corrupt_encoded
                body = body[:at] + bytes(b ^ 0xFF for b in body[at:at + 16]) + body[at + 16:]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        if script.encoding is not None:
            self.send_header("Content-Encoding", script.encoding)
        if script.no_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if script.stall_after is not None and n == 1:
            self.wfile.write(body[: script.stall_after])
            self.wfile.flush()
            time.sleep(script.stall_seconds)
            self.close_connection = True
            return
        cut = script.cut_after is not None and script.fail_first < n <= script.fail_first + script.cut_times
        if cut:
            self.wfile.write(body[: script.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)

    @staticmethod
    def _decide(data: bytes | None, script: Script, n: int, rng: str | None) -> tuple[int, int]:
        """(status, first byte) for the n-th request of a file."""
        if data is None:
            return 404, 0
        if script.status is not None:
            return script.status, 0
        if n <= script.fail_first:
            return 503, 0
        m = re.match(r"^bytes=(\d+)-$", rng or "")
        if m and not script.ignore_range and (script.encoding is None or script.encode_ranges):
            start = int(m.group(1))
            return (416, 0) if start >= len(data) else (200 if script.range_as_200 else 206, start)
        return 200, 0


class FixtureServer:
    """A threaded HTTP server on 127.0.0.1 serving in-memory files; use as a context manager."""

    def __init__(self) -> None:
        self.state = _State()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self.state
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/files"

    def add(self, filename: str, data: bytes, **script) -> RemoteFile:
        """Serve ``data`` as ``files/<filename>`` with a failure ``Script``; return its RemoteFile."""
        with self.state.lock:
            self.state.files[f"files/{filename}"] = data
            self.state.scripts[f"files/{filename}"] = Script(**script)
        return remote_for(filename, data, self.base_url)

    def requests(self, filename: str | None = None) -> list[Request]:
        with self.state.lock:
            return [r for r in self.state.requests if filename is None or r.path == f"files/{filename}"]

    def __enter__(self) -> "FixtureServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
