"""caanet.data.archive: MD5s and safe, idempotent extraction of zip archives (no network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caanet.data import archive as ar
from caanet.data.archive import extract_zip, verify_md5
from caanet.errors import DownloadError

try:
    from httpserver_util import zip_bytes
    from test_download import BIG, _md5
except ImportError:  # tests/ collected as a package
    from tests.httpserver_util import zip_bytes
    from tests.test_download import BIG, _md5


def _tree_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def test_verify_md5(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(BIG)
    assert verify_md5(p, _md5(BIG)) and verify_md5(p, _md5(BIG).upper())
    assert not verify_md5(p, _md5(b"other"))


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("member", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"])
def test_unsafe_member_refused_before_writing(tmp_path, member):
    archive = _write(tmp_path, "bad.zip", zip_bytes({"good/first.txt": b"1", member: b"x"}))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=rf"bad\.zip: member '{member}'"):
        extract_zip(archive, dest)
    assert not dest.exists() or not any(dest.iterdir())
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.zip"] + (["dest"] if dest.exists() else []))


def test_symlink_member_refused(tmp_path):
    archive = _write(tmp_path, "link.zip", zip_bytes({"a.txt": b"1"}, symlinks={"escape": "../../etc"}))
    with pytest.raises(DownloadError, match=r"link\.zip: member 'escape' is a symbolic link"):
        extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "a.txt").exists()


def test_existing_symlinked_folder_in_dest_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "top").symlink_to(outside, target_is_directory=True)
    archive = _write(tmp_path, "ok.zip", zip_bytes({"top/a.txt": b"a"}))
    with pytest.raises(DownloadError, match=r"ok\.zip: .*top leads outside"):
        extract_zip(archive, dest)
    assert not any(outside.iterdir())


def test_corrupt_member_crc_error(tmp_path):
    data = bytearray(zip_bytes({"top/a.bin": BIG}))
    data[200] ^= 0xFF  # inside the deflated data of the only member
    archive = _write(tmp_path, "crc.zip", bytes(data))
    with pytest.raises(DownloadError, match=r"crc\.zip: member 'top/a\.bin' is corrupt"):
        extract_zip(archive, tmp_path / "dest")
    assert _tree_files(tmp_path / "dest") == set()


def test_extract_is_idempotent_and_cleans_stale_temp(tmp_path):
    archive = _write(tmp_path, "ok.zip", zip_bytes({"top/a.txt": b"a", "top/sub/b.txt": b"b"}))
    dest = tmp_path / "dest"
    stale = dest / ".caanet-extract-ok.zip.tmp" / "top"
    stale.mkdir(parents=True)
    (stale / "half.txt").write_bytes(b"half-written")
    files = extract_zip(archive, dest)
    assert [f.relative_to(dest).as_posix() for f in files] == ["top/a.txt", "top/sub/b.txt"]
    assert not (dest / ".caanet-extract-ok.zip.tmp").exists()
    mtime = (dest / "top/a.txt").stat().st_mtime_ns
    archive.unlink()  # the marker alone proves the extraction when the md5 is known
    assert extract_zip(archive, dest, md5=_md5(zip_bytes({"top/a.txt": b"a", "top/sub/b.txt": b"b"}))) == files
    assert (dest / "top/a.txt").stat().st_mtime_ns == mtime
    (dest / "top/a.txt").unlink()  # a missing file invalidates the marker
    assert ar.extracted_files(dest, "ok.zip", _md5(b"whatever")) is None


# --- issue 9: an archive whose extracted tree would differ from its member list is refused ---


def _special(name: str, mode: int) -> "zipfile.ZipInfo":
    import zipfile

    info = zipfile.ZipInfo(name, date_time=(2018, 4, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _zip_with(infos_and_data) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in infos_and_data:
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("members, bad, why", [
    ([("top/a.txt", b"1"), ("top/a.txt", b"2")], "top/a.txt", "appears twice"),
    ([("top/a", b"1"), ("top/a/b.txt", b"2")], "top/a/b.txt", "lies below 'top/a', which is a file"),
    ([("top/a/b.txt", b"2"), ("top/a", b"1")], "top/a", "same path as folder"),
    ([("top/a/", b""), ("top/a", b"1")], "top/a", "same path as folder"),
    ([("top/a", b"1"), ("top/a/", b"")], "top/a/", "folder of the same path as file"),
    ([("top/x/../b.txt", b"1")], "top/x/../b.txt", "escapes"),
    ([("top\\b.txt", b"1")], "top\\b.txt", "backslash"),
    ([("top//b.txt", b"1")], "top//b.txt", "empty or '.' path component"),
    ([("top/./b.txt", b"1")], "top/./b.txt", "empty or '.' path component"),
])
def test_member_list_differing_from_the_tree_is_refused_before_writing(tmp_path, members, bad, why):
    import zipfile
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        data = _zip_with([(zipfile.ZipInfo(n, date_time=(2018, 4, 1, 0, 0, 0)), d)
                          for n, d in [("top/first.txt", b"0")] + members])
    archive = _write(tmp_path, "tree.zip", data)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=rf"tree\.zip: member {re.escape(repr(bad))}.*{why}"):
        extract_zip(archive, dest)
    assert _tree_files(dest) == set() if dest.exists() else True


@pytest.mark.parametrize("mode, kind", [(0o020644, "character device"), (0o060644, "block device"),
                                        (0o010644, "named pipe"), (0o140644, "socket"), (0o120777, "symbolic link")])
def test_special_file_members_are_refused(tmp_path, mode, kind):
    archive = _write(tmp_path, "dev.zip", _zip_with([(_special("top/ok.txt", 0o100644), b"1"),
                                                     (_special("top/node", mode), b"")]))
    with pytest.raises(DownloadError, match=rf"dev\.zip: member 'top/node' is a {kind}"):
        extract_zip(archive, tmp_path / "dest")
    assert _tree_files(tmp_path / "dest") == set()


def test_member_clashing_with_the_destination_is_refused_before_writing(tmp_path):
    dest = tmp_path / "dest"
    (dest / "top" / "a").mkdir(parents=True)
    (dest / "top" / "f").write_bytes(b"mine")
    archive = _write(tmp_path, "clash.zip", zip_bytes({"top/first.txt": b"1", "top/a": b"x"}))
    with pytest.raises(DownloadError, match=r"clash\.zip: member 'top/a' is a file but .*top/a is a folder"):
        extract_zip(archive, dest)
    archive = _write(tmp_path, "clash2.zip", zip_bytes({"top/first.txt": b"1", "top/f/b.txt": b"x"}))
    with pytest.raises(DownloadError, match=r"clash2\.zip: member 'top/f/b.txt' needs folder .*top/f, which is a file"):
        extract_zip(archive, dest)
    assert not (dest / "top" / "first.txt").exists()


def test_names_differing_only_in_case_are_refused_where_the_file_system_folds_case(tmp_path, monkeypatch):
    archive = _write(tmp_path, "case.zip", zip_bytes({"top/Readme.txt": b"1", "top/README.txt": b"2"}))
    monkeypatch.setattr(ar, "_case_insensitive", lambda folder: True)
    with pytest.raises(DownloadError, match=r"case\.zip: member 'top/README.txt' appears twice \(first as 'top/Readme.txt'\)"):
        extract_zip(archive, tmp_path / "dest")
    monkeypatch.setattr(ar, "_case_insensitive", lambda folder: False)  # a case-sensitive one keeps both
    assert len(extract_zip(archive, tmp_path / "dest2")) == 2
