"""caanet.data.layout: both DCASE layouts, every validation error, the index round trip."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from caanet.data import layout
from caanet.data.layout import SCENE_LABELS, read_dataset, read_index, summarise, write_index
from caanet.errors import DatasetError

META_HEAD = "filename\tscene_label\tidentifier\tsource_label\n"

# (filename, scene, identifier, device, split)
CLIPS = [
    ("audio/airport-barcelona-0-0-a.wav", "airport", "barcelona-0", "a", "train"),
    ("audio/airport-barcelona-0-0-b.wav", "airport", "barcelona-0", "b", "train"),
    ("audio/airport-barcelona-0-1-a.wav", "airport", "barcelona-0", "a", "train"),
    ("audio/bus-london-3-0-a.wav", "bus", "london-3", "a", "test"),
    ("audio/bus-london-3-0-c.wav", "bus", "london-3", "c", "test"),
    ("audio/park-milan-7-0-a.wav", "park", "milan-7", "a", "none"),
]


def write_dataset(root: Path, style: str, clips=CLIPS, *, meta_rows=None, train=None, evaluate=None,
                  test=None, touch=True) -> Path:
    """Write a tiny dataset folder in the real layout (empty audio files: read_dataset never opens them)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "evaluation_setup").mkdir(exist_ok=True)
    if touch:
        for f, *_ in clips:
            (root / f).write_bytes(b"")
    rows = meta_rows if meta_rows is not None else [f"{f}\t{s}\t{i}\t{d}" for f, s, i, d, _ in clips]
    (root / "meta.csv").write_text(META_HEAD + "".join(r + "\n" for r in rows))
    train = train if train is not None else [f"{f}\t{s}" for f, s, _, _, sp in clips if sp == "train"]
    evaluate = evaluate if evaluate is not None else [f"{f}\t{s}" for f, s, _, _, sp in clips if sp == "test"]
    test = test if test is not None else [f for f, *_, sp in clips if sp == "test"]
    if style == "dcase2018":
        files = {"fold1_train.txt": ("", train), "fold1_evaluate.txt": ("", evaluate), "fold1_test.txt": ("", test)}
    else:
        files = {"fold1_train.csv": ("filename\tscene_label\n", train),
                 "fold1_evaluate.csv": ("filename\tscene_label\n", evaluate),
                 "fold1_test.csv": ("filename\n", test)}
    for name, (head, lines) in files.items():
        (root / "evaluation_setup" / name).write_text(head + "".join(ln + "\n" for ln in lines))
    return root


@pytest.mark.parametrize("style", ["dcase2018", "dcase2019"])
def test_both_layouts_parse_with_splits(tmp_path, style):
    root = write_dataset(tmp_path / "ds", style)
    df = read_dataset(root, scene_labels=SCENE_LABELS, device_labels=["a", "b", "c"])
    assert list(df.columns) == list(layout.INDEX_COLUMNS)
    assert df.attrs["layout"] == style
    assert list(df["filename"]) == sorted(f for f, *_ in CLIPS)
    expected = {f: sp for f, *_, sp in CLIPS}
    assert dict(zip(df["filename"], df["split"])) == expected
    row = df.set_index("filename").loc["audio/bus-london-3-0-c.wav"]
    assert (row["scene"], row["identifier"], row["device"]) == ("bus", "london-3", "c")
    assert Path(row["path"]).is_absolute() and Path(row["path"]).exists()


def test_milan_style_clips_in_no_split_are_none(tmp_path):
    df = read_dataset(write_dataset(tmp_path / "ds", "dcase2019"))
    assert df.loc[df["identifier"] == "milan-7", "split"].tolist() == ["none"]
    assert set(df["split"]) == {"train", "test", "none"}


def test_scene_labels_constant_is_sorted_and_has_ten():
    assert list(SCENE_LABELS) == sorted(SCENE_LABELS) and len(SCENE_LABELS) == 10


def test_layout_detection_errors(tmp_path):
    root = write_dataset(tmp_path / "ds", "dcase2018")
    (root / "evaluation_setup" / "fold1_train.csv").write_text("filename\tscene_label\n")
    with pytest.raises(DatasetError, match="both of fold1_train.txt"):
        read_dataset(root)
    for f in (root / "evaluation_setup").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="neither"):
        read_dataset(root)


def expect(root, pattern, **kw):
    with pytest.raises(DatasetError) as info:
        read_dataset(root, **kw)
    assert re.search(pattern, str(info.value)), str(info.value)


def meta_rows():
    return [f"{f}\t{s}\t{i}\t{d}" for f, s, i, d, _ in CLIPS]


def test_missing_meta_and_wrong_header(tmp_path):
    root = write_dataset(tmp_path / "ds", "dcase2018")
    (root / "meta.csv").unlink()
    expect(root, r"meta\.csv: missing")
    (root / "meta.csv").write_text("filename\tscene\tidentifier\tsource_label\n")
    expect(root, r"meta\.csv, line 1: header is 'filename\\tscene\\tidentifier")


def test_row_with_wrong_field_count_names_line(tmp_path):
    rows = meta_rows()
    rows[2] = rows[2] + "\textra"
    expect(write_dataset(tmp_path / "ds", "dcase2018", meta_rows=rows), r"meta\.csv, line 4: expected 4 .*got 5")
    rows = meta_rows()
    rows[0] = "audio/x.wav\tairport"
    expect(write_dataset(tmp_path / "ds2", "dcase2018", meta_rows=rows), r"meta\.csv, line 2: expected 4 .*got 2")


def test_missing_audio_file_names_meta_row_and_file(tmp_path):
    root = write_dataset(tmp_path / "ds", "dcase2019")
    (root / "audio/bus-london-3-0-a.wav").unlink()
    expect(root, r"meta\.csv, line 5: audio file 'audio/bus-london-3-0-a\.wav' does not exist")
    assert len(read_dataset(root, check_files=False)) == len(CLIPS)


def test_unknown_scene_and_device_labels(tmp_path):
    rows = meta_rows()
    rows[3] = rows[3].replace("\tbus\t", "\tbus_stop\t")
    root = write_dataset(tmp_path / "ds", "dcase2018", meta_rows=rows,
                         evaluate=["audio/bus-london-3-0-c.wav\tbus"], test=[])
    expect(root, r"meta\.csv, line 5: unknown scene label 'bus_stop'", scene_labels=SCENE_LABELS)
    expect(write_dataset(tmp_path / "ds2", "dcase2018"), r"meta\.csv, line 3: unknown device label 'b'",
           device_labels=["a", "c"])


def test_duplicate_filename_in_meta(tmp_path):
    rows = meta_rows() + [meta_rows()[1]]
    expect(write_dataset(tmp_path / "ds", "dcase2018", meta_rows=rows),
           r"meta\.csv, line 8: duplicate filename 'audio/airport-barcelona-0-0-b\.wav' \(first at line 3\)")


def test_split_file_naming_unknown_clip(tmp_path):
    train = ["audio/airport-barcelona-0-0-a.wav\tairport", "audio/tram-paris-1-0-a.wav\ttram"]
    root = write_dataset(tmp_path / "ds", "dcase2018", train=train)
    expect(root, r"fold1_train\.txt, line 2: 'audio/tram-paris-1-0-a\.wav' is not in .*meta\.csv")
    root = write_dataset(tmp_path / "ds2", "dcase2019", test=["audio/nope-a.wav"])
    expect(root, r"fold1_test\.csv, line 2: 'audio/nope-a\.wav' is not in")


def test_split_scene_disagreeing_with_meta(tmp_path):
    evaluate = ["audio/bus-london-3-0-a.wav\tbus", "audio/bus-london-3-0-c.wav\ttram"]
    root = write_dataset(tmp_path / "ds", "dcase2019", evaluate=evaluate)
    expect(root, r"fold1_evaluate\.csv, line 3: scene 'tram' of 'audio/bus-london-3-0-c\.wav' disagrees "
                 r"with meta\.csv \('bus', line 6\)")


def test_clip_in_both_train_and_evaluate(tmp_path):
    evaluate = ["audio/bus-london-3-0-a.wav\tbus", "audio/airport-barcelona-0-1-a.wav\tairport"]
    root = write_dataset(tmp_path / "ds", "dcase2018", evaluate=evaluate)
    expect(root, r"fold1_evaluate\.txt, line 2: 'audio/airport-barcelona-0-1-a\.wav' is also in "
                 r"fold1_train\.txt \(line 3\)")


def test_wrong_split_header_and_unsafe_filename(tmp_path):
    root = write_dataset(tmp_path / "ds", "dcase2019")
    (root / "evaluation_setup/fold1_train.csv").write_text("file\tscene\n")
    expect(root, r"fold1_train\.csv, line 1: header is 'file\\tscene'")
    rows = meta_rows() + ["../escape.wav\tpark\tx-1\ta"]
    expect(write_dataset(tmp_path / "ds2", "dcase2018", meta_rows=rows), r"line 8: filename '\.\./escape\.wav'")


def test_index_round_trip_and_bad_index(tmp_path):
    df = read_dataset(write_dataset(tmp_path / "ds", "dcase2019"))
    write_index(df, tmp_path / "index.csv")
    back = read_index(tmp_path / "index.csv")
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_like=False, check_dtype=False)
    assert back.loc[back["identifier"] == "milan-7", "split"].item() == "none"
    text = (tmp_path / "index.csv").read_text().replace(",test\n", ",evaluate\n", 1)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"bad\.csv, line \d+: split 'evaluate'"):
        read_index(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="lacks columns"):
        write_index(df.drop(columns="split"), tmp_path / "x.csv")


def test_summarise_counts_device_split_scene(tmp_path):
    s = summarise(read_dataset(write_dataset(tmp_path / "ds", "dcase2019")))
    assert list(s.columns) == ["device", "split", "scene", "n_clips"]
    get = s.set_index(["device", "split", "scene"])["n_clips"]
    assert get[("a", "train", "airport")] == 2 and get[("c", "test", "bus")] == 1 and get[("b", "test", "bus")] == 0
    assert s["n_clips"].sum() == len(CLIPS)


def test_twenty_thousand_rows_are_fast(tmp_path):
    clips = [(f"audio/airport-city-{i // 50}-{i % 50}-a.wav", "airport", f"city-{i // 50}", "a",
              "train" if i % 3 else "test") for i in range(20000)]
    root = write_dataset(tmp_path / "big", "dcase2018", clips)
    t0 = time.perf_counter()
    df = read_dataset(root, scene_labels=SCENE_LABELS)
    elapsed = time.perf_counter() - t0
    assert len(df) == 20000 and (df["split"] == "test").sum() == 6667
    assert elapsed < 5.0, elapsed
