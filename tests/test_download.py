"""caanet.data.download against a scripted HTTP server on 127.0.0.1 (no other network); extraction is
tests/test_archive.py."""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from pathlib import Path

import pytest

from caanet.data import download as dl
from caanet.data.download import RemoteFile, download_file, fetch_dataset, remote_files
from caanet.errors import ConfigError, DownloadError

try:
    from httpserver_util import FixtureServer, dcase_archives, dcase_tree, zip_bytes
except ImportError:  # tests/ collected as a package
    from tests.httpserver_util import FixtureServer, dcase_archives, dcase_tree, zip_bytes

FAST = {"retries": 3, "backoff": 0.01, "progress": False, "timeout": 5.0}
BIG = bytes(range(256)) * 1024  # 256 KiB, several read chunks' worth of ranges


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------
# The remote-file table
# --------------------------------------------------------------------------------------------


def test_remote_files_reads_packaged_table():
    f18 = remote_files("dcase2018_task1b_dev")
    f19 = remote_files("dcase2019_task1b_dev")
    assert len(f18) == 9 and len(f19) == 13
    assert [f.content_type for f in f18[:3]] == ["documentation", "meta", "audio"]
    assert f18[2].filename == "TUT-urban-acoustic-scenes-2018-mobile-development.audio.1.zip"
    assert f18[2].bytes == 1692337547 and f18[2].md5 == "d6f2671af84032b97f393354c124517d"
    assert f18[2].url.startswith("https://zenodo.org/record/1228235/files/")


def test_remote_files_base_url_replaces_prefix():
    files = remote_files("dcase2019_task1b_dev", base_url="http://mirror.example/dcase/")
    assert files[0].url == "http://mirror.example/dcase/TAU-urban-acoustic-scenes-2019-mobile-development.doc.zip"


def test_remote_files_unknown_key_and_bad_rows(tmp_path):
    with pytest.raises(ConfigError, match="dcase2020.*known keys.*dcase2018_task1b_dev"):
        remote_files("dcase2020")
    table = tmp_path / "t.csv"
    table.write_text("dataset,content_type,filename,url,bytes,md5\n"
                     "x,meta,a.zip,http://h/a.zip,12,0123456789abcdef0123456789abcdef\n"
                     "x,audio,b.zip,http://h/b.zip,12,not-an-md5\n")
    with pytest.raises(ConfigError, match=r"t\.csv, row 3.*b\.zip.*md5"):
        remote_files("x", table=table)
    table.write_text("dataset,filename,url\nx,a.zip,http://h/a.zip\n")
    with pytest.raises(ConfigError, match=r"missing column.*bytes"):
        remote_files("x", table=table)


# --------------------------------------------------------------------------------------------
# Downloading one file
# --------------------------------------------------------------------------------------------


def test_download_and_no_second_request(server, tmp_path):
    remote = server.add("big.bin", BIG)
    path = download_file(remote, tmp_path, **FAST)
    assert path == tmp_path / "big.bin" and path.read_bytes() == BIG
    assert not (tmp_path / "big.bin.part").exists()
    assert download_file(remote, tmp_path, **FAST) == path
    assert len(server.requests("big.bin")) == 1


def test_resume_after_cut_connection(server, tmp_path):
    remote = server.add("big.bin", BIG, cut_after=100_000)
    path = download_file(remote, tmp_path, **FAST)
    assert _md5(path.read_bytes()) == remote.md5
    reqs = server.requests("big.bin")
    assert [(r.range, r.status) for r in reqs] == [(None, 200), ("bytes=100000-", 206)]


def test_resume_part_left_by_killed_run(server, tmp_path):
    remote = server.add("big.bin", BIG)
    (tmp_path / "big.bin.part").write_bytes(BIG[:5000])
    path = download_file(remote, tmp_path, **FAST)
    assert path.read_bytes() == BIG
    assert [r.range for r in server.requests("big.bin")] == ["bytes=5000-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    remote = server.add("big.bin", BIG, cut_after=70_000, ignore_range=True)
    path = download_file(remote, tmp_path, **FAST)
    assert path.read_bytes() == BIG
    reqs = server.requests("big.bin")
    assert [(r.range, r.status) for r in reqs] == [(None, 200), ("bytes=70000-", 200)]


def test_stalled_connection_times_out_and_resumes(server, tmp_path):
    remote = server.add("big.bin", BIG, stall_after=50_000, stall_seconds=1.0)
    path = download_file(remote, tmp_path, **{**FAST, "timeout": 0.3})
    assert path.read_bytes() == BIG
    assert [r.range for r in server.requests("big.bin")] == [None, "bytes=50000-"]


def test_5xx_once_then_success(server, tmp_path):
    remote = server.add("big.bin", BIG, fail_first=1)
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    assert [r.status for r in server.requests("big.bin")] == [503, 200]


def test_retries_exhausted_keeps_partial_data_for_next_run(server, tmp_path):
    remote = server.add("big.bin", BIG, cut_after=1000, cut_times=3)
    with pytest.raises(DownloadError, match=r"big\.bin.*after 3 attempt.*3000 bytes are kept"):
        download_file(remote, tmp_path, **{**FAST, "retries": 2})
    assert (tmp_path / "big.bin.part").stat().st_size == 3000
    assert not (tmp_path / "big.bin").exists()
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    assert [r.range for r in server.requests("big.bin")] == [None, "bytes=1000-", "bytes=2000-", "bytes=3000-"]


def test_http_404_fails_without_retry(server, tmp_path):
    remote = server.add("big.bin", BIG, status=404)
    with pytest.raises(DownloadError, match=r"big\.bin: HTTP 404"):
        download_file(remote, tmp_path, **FAST)
    assert len(server.requests()) == 1


def test_md5_mismatch_is_quarantined(server, tmp_path):
    good = server.add("big.bin", BIG)
    wrong = RemoteFile(good.filename, good.url, good.bytes, "0" * 32)
    with pytest.raises(DownloadError) as err:
        download_file(wrong, tmp_path, **FAST)
    msg = str(err.value)
    assert "big.bin" in msg and "0" * 32 in msg and good.md5 in msg
    assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.bin.part").exists()
    assert (tmp_path / "big.bin.md5-mismatch").read_bytes() == BIG


def test_existing_final_file_with_wrong_md5_is_replaced(server, tmp_path):
    remote = server.add("big.bin", BIG)
    (tmp_path / "big.bin").write_bytes(b"stale")
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    assert len(server.requests("big.bin")) == 1


def test_progress_logs_when_not_a_terminal(server, tmp_path, caplog):
    remote = server.add("big.bin", BIG)
    with caplog.at_level(logging.INFO, logger="caanet.data.download"):
        download_file(remote, tmp_path, **{**FAST, "progress": True})
    assert any(f"{len(BIG)} of {len(BIG)} bytes" in r.getMessage() for r in caplog.records)


def test_progress_bar_on_a_terminal(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl.sys.stderr, "isatty", lambda: True)
    remote = server.add("big.bin", BIG, cut_after=70_000, ignore_range=True)
    assert download_file(remote, tmp_path, **{**FAST, "progress": True}).read_bytes() == BIG
    assert "big.bin" in capsys.readouterr().err  # tqdm's bar, labelled with the file name


# --------------------------------------------------------------------------------------------
# A server compressing on the fly (Content-Encoding) although asked for identity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, raw", [("gzip", False), ("x-gzip", False), ("deflate", False),
                                           ("deflate", True), ("gzip, deflate", False), ("identity", False)])
def test_compressed_answer_is_decoded_and_verified(server, tmp_path, encoding, raw):
    remote = server.add("big.bin", BIG, encoding=encoding, raw_deflate=raw)
    path = download_file(remote, tmp_path, **FAST)
    assert path.read_bytes() == BIG and not (tmp_path / "big.bin.part").exists()
    assert [(r.range, r.status) for r in server.requests("big.bin")] == [(None, 200)]


def test_gzip_stream_of_several_members_is_one_file(server, tmp_path):
    remote = server.add("big.bin", BIG, encoding="gzip, gzip")   # gzip of a gzip: both undone
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    from caanet.data.download import _Decoder

    two_members = gzip.compress(BIG[:1000], mtime=0) + gzip.compress(BIG[1000:], mtime=0)
    decoder = _Decoder(["gzip"])
    out = b"".join(decoder.decode(two_members[i:i + 100]) for i in range(0, len(two_members), 100))
    assert out == BIG and decoder.complete


@pytest.mark.parametrize("no_length", [False, True])
def test_cut_compressed_answer_keeps_only_decoded_bytes(server, tmp_path, no_length):
    """A cut inside a gzip stream keeps the decoded prefix (the file's own bytes), never gzip bytes;
    without a Content-Length the cut shows as a gzip stream that does not end."""
    remote = server.add("big.bin", BIG, encoding="gzip", cut_after=600, cut_times=2, no_length=no_length)
    why = r"inside the 'gzip' stream" if no_length else r"\(600 of \d+ bytes of the answer\)"
    with pytest.raises(DownloadError, match=rf"connection closed (after \d+ bytes )?{why}.*bytes are kept in"):
        download_file(remote, tmp_path, **{**FAST, "retries": 1})
    part = (tmp_path / "big.bin.part").read_bytes()
    assert 0 < len(part) and part == BIG[:len(part)]   # a prefix of the file itself
    # the next run resumes with Range; this server ignores Range when it compresses (as nginx does),
    # so the whole file comes again compressed and is written from byte 0
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    reqs = [(r.range, r.status) for r in server.requests("big.bin")]
    assert reqs[0] == (None, 200) and reqs[-1] == (f"bytes={len(part)}-", 200) and len(reqs) == 3


def test_part_from_before_and_a_server_now_compressing_ranges(server, tmp_path):
    """A .part of plain bytes, and a server that now answers Range with a compressed slice (206 +
    Content-Encoding): the slice cannot be decoded, so the download restarts from byte 0."""
    remote = server.add("big.bin", BIG, encoding="gzip", encode_ranges=True)
    (tmp_path / "big.bin.part").write_bytes(BIG[:5000])
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    assert [(r.range, r.status) for r in server.requests("big.bin")] == [("bytes=5000-", 206), (None, 200)]


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, x-made-up"])
def test_unknown_content_encoding_refused_naming_it_and_the_url(server, tmp_path, encoding):
    remote = server.add("big.bin", BIG, encoding=encoding)
    (tmp_path / "big.bin.part").write_bytes(BIG[:5000])   # bytes from an earlier, plain download
    with pytest.raises(DownloadError) as err:
        download_file(remote, tmp_path, **FAST)
    msg = str(err.value)
    assert f"Content-Encoding {encoding!r}" in msg and remote.url in msg and "size mismatch" not in msg
    assert (tmp_path / "big.bin.part").read_bytes() == BIG[:5000]  # untouched: nothing encoded kept
    assert not (tmp_path / "big.bin").exists()
    assert len(server.requests("big.bin")) == 1                     # not retried


def test_corrupt_compressed_answer_keeps_nothing_of_it(server, tmp_path):
    remote = server.add("big.bin", BIG, encoding="gzip", corrupt_encoded=200)
    (tmp_path / "big.bin.part").write_bytes(BIG[:5000])
    with pytest.raises(DownloadError, match=r"big\.bin: .*/files/big\.bin sent a corrupt 'gzip' stream"):
        download_file(remote, tmp_path, **FAST)
    # the server sent the whole file again (it ignores Range when compressing): nothing it decoded to is kept
    assert (tmp_path / "big.bin.part").stat().st_size == 0 and not (tmp_path / "big.bin").exists()
    assert len(server.requests("big.bin")) == 1                     # not retried


# --------------------------------------------------------------------------------------------
# Whole datasets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["2018", "2019"])
def test_fetch_dataset_end_to_end(server, tmp_path, style):
    archives = dcase_archives(style)
    files = [server.add(name, data) for name, data in archives.items()]
    root = fetch_dataset(f"dcase{style}_task1b_dev", tmp_path, files=files, n_retries=2, progress=False,
                         backoff=0.01, timeout=5.0)
    top, tree = dcase_tree(style)
    assert root == tmp_path / top and (root / "meta.csv").is_file()
    ext = "txt" if style == "2018" else "csv"
    assert (root / "evaluation_setup" / f"fold1_train.{ext}").is_file()
    for path, data in tree.items():
        assert (tmp_path / path).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(archives)
    n = len(server.requests())
    assert n == 3
    assert fetch_dataset(f"dcase{style}_task1b_dev", tmp_path, files=files, progress=False) == root
    assert len(server.requests()) == n  # nothing downloaded the second time


def test_fetch_dataset_base_url_and_mappings_without_archives(server, tmp_path):
    archives = dcase_archives("2018")
    entries = []
    for name, data in archives.items():
        server.add(name, data)
        entries.append({"filename": name, "bytes": len(data), "md5": _md5(data)})
    root = fetch_dataset("x", tmp_path, base_url=server.base_url, files=entries, progress=False,
                         keep_archives=False)
    assert (root / "meta.csv").is_file() and not any((tmp_path / "downloads").iterdir())
    assert fetch_dataset("x", tmp_path, base_url=server.base_url, files=entries, progress=False) == root
    assert len(server.requests()) == 3


def test_fetch_dataset_truncated_zip(server, tmp_path):
    archives = dcase_archives("2019")
    name = next(n for n in archives if ".audio." in n)
    cut = archives[name][: len(archives[name]) // 2]
    files = [server.add(n, cut if n == name else d) for n, d in archives.items()]
    with pytest.raises(DownloadError, match=rf"{name}.*not a readable zip archive"):
        fetch_dataset("dcase2019_task1b_dev", tmp_path, files=files, progress=False)
    assert (tmp_path / "downloads" / name).read_bytes() == cut  # md5 matched: downloaded fine
    assert not list((tmp_path / dcase_tree("2019")[0]).glob("audio/*"))
    assert not list(tmp_path.glob(".caanet-extract-*"))


def test_fetch_dataset_without_meta_csv(server, tmp_path):
    remote = server.add("nometa.zip", zip_bytes({"top/audio/x.wav": b"RIFF"}))
    with pytest.raises(DownloadError, match=r"no meta\.csv among the 1 extracted files"):
        fetch_dataset("x", tmp_path, files=[remote], progress=False)


def test_fetch_dataset_md5_mismatch_not_extracted(server, tmp_path):
    archives = dcase_archives("2018")
    name = next(n for n in archives if ".meta." in n)
    files = [server.add(n, d) for n, d in archives.items()]
    files = [RemoteFile(f.filename, f.url, f.bytes, "f" * 32) if f.filename == name else f for f in files]
    with pytest.raises(DownloadError, match=rf"{name}: MD5 mismatch \(expected f{{32}}, got [0-9a-f]{{32}}\)"):
        fetch_dataset("dcase2018_task1b_dev", tmp_path, files=files, n_retries=0, progress=False)
    assert not (tmp_path / "downloads" / name).exists()
    assert not (tmp_path / dcase_tree("2018")[0] / "meta.csv").exists()


# --- issue 9: Range answered with 200 + Content-Range; a mirror's file of another size ---


def test_range_answered_with_200_and_content_range_is_appended(server, tmp_path):
    remote = server.add("big.bin", BIG, cut_after=60_000, range_as_200=True)
    path = download_file(remote, tmp_path, **FAST)
    assert path.read_bytes() == BIG
    assert [(r.range, r.status) for r in server.requests("big.bin")] == [(None, 200), ("bytes=60000-", 200)]


def test_part_resumed_from_a_200_with_content_range(server, tmp_path):
    remote = server.add("big.bin", BIG, range_as_200=True)
    (tmp_path / "big.bin.part").write_bytes(BIG[:5000])
    assert download_file(remote, tmp_path, **FAST).read_bytes() == BIG
    assert [r.range for r in server.requests("big.bin")] == ["bytes=5000-"]


@pytest.mark.parametrize("delta", [+1000, -1000])
@pytest.mark.parametrize("how", ["content_length", "content_range", "no_length"])
def test_mirror_file_of_another_size_is_a_size_mismatch(server, tmp_path, delta, how):
    import dataclasses

    served = BIG[:len(BIG) + delta] if delta < 0 else BIG + b"x" * delta
    remote = server.add("big.bin", served, no_length=(how == "no_length"))
    remote = dataclasses.replace(remote, bytes=len(BIG), md5=_md5(BIG))  # what the catalogue lists
    if how == "content_range":  # resuming a part: the size comes in Content-Range
        (tmp_path / "big.bin.part").write_bytes(BIG[:5000])
    with pytest.raises(DownloadError, match=rf"size mismatch: {re.escape(remote.url)} serves {len(served)} bytes, "
                                            rf"the catalogue .* lists {len(BIG)}"):
        download_file(remote, tmp_path, **FAST)
    assert len(server.requests("big.bin")) <= 2  # no rounds of retries as for a cut connection


def test_the_documented_size_of_the_dcase2020_set_is_the_catalogues():
    """README and config.yaml state the DCASE 2020 Task 1A development set's archives at the size the
    catalogue's byte counts add up to (27.4 GB, not ~29)."""
    import pandas as pd

    repo = Path(__file__).resolve().parent.parent
    catalogue = pd.read_csv(repo / "caanet" / "data" / "dcase_remote_files.csv")
    size = f"{catalogue.loc[catalogue['dataset'] == 'dcase2020_task1a_dev', 'bytes'].sum() / 1e9:.1f} GB"
    assert size == "27.4 GB"
    for doc in ("README.md", "config.yaml"):
        text = (repo / doc).read_text(encoding="utf-8")
        assert f"DCASE 2020 Task 1A development set, {size}" in text or f"DCASE 2020 Task 1A, {size}" in text, doc
        assert "~29 GB" not in text, doc
