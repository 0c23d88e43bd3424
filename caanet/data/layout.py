"""Reader of the DCASE Task 1B development-set layouts (2018 and 2019), and the clip index.

Both layouts share ``audio/{scene}-{city}-{location}-{segment}-{device}.wav`` and a tab-separated
``meta.csv`` (header ``filename scene_label identifier source_label``). They differ in their split files:

* ``dcase2018`` (TUT Urban Acoustic Scenes 2018 Mobile): ``evaluation_setup/fold1_train.txt`` and
  ``fold1_evaluate.txt`` (``audio/....wav<TAB>scene``, no header) and ``fold1_test.txt`` (file names only);
* ``dcase2019`` (TAU Urban Acoustic Scenes 2019 Mobile): ``fold1_train.csv``, ``fold1_evaluate.csv``
  (header ``filename scene_label``) and ``fold1_test.csv`` (header ``filename``). TAU Urban Acoustic
  Scenes 2020 Mobile (DCASE 2020 Task 1A: devices a, b, c, s1-s6) uses these same files and is read
  as ``dcase2019``; nothing here assumes a number of devices (``device_labels=None`` accepts any).

:func:`read_dataset` turns either into one validated frame (``docs/design.md``, "Layout"); clips listed
in neither train nor evaluate (Milan in 2019) get split ``none``. Every problem raises
:class:`caanet.errors.DatasetError` naming the file and its line (line 1 is the header, if any).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from caanet.errors import DatasetError
from caanet.io import TEXT_ENCODING, write_csv_atomic

SCENE_LABELS = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)
INDEX_COLUMNS = ("filename", "path", "scene", "identifier", "device", "split")
SPLITS = ("train", "test", "none")
META_HEADER = ("filename", "scene_label", "identifier", "source_label")


@dataclass(frozen=True)
class SplitFormat:
    """How one layout writes its split files: extension and header per file (None: no header)."""

    suffix: str
    train_header: tuple[str, ...] | None
    test_header: tuple[str, ...] | None

    def path(self, root: Path, which: str) -> Path:
        return root / "evaluation_setup" / f"fold1_{which}{self.suffix}"


LAYOUTS = {
    "dcase2018": SplitFormat(".txt", None, None),
    "dcase2019": SplitFormat(".csv", ("filename", "scene_label"), ("filename",)),
}


def detect_layout(root: str | os.PathLike) -> str:
    """``dcase2018`` or ``dcase2019``, from which ``evaluation_setup/fold1_train.*`` exists."""
    root = Path(root)
    found = [name for name, fmt in LAYOUTS.items() if fmt.path(root, "train").is_file()]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise DatasetError(
            f"{root / 'evaluation_setup'}: found {what} of fold1_train.txt (DCASE 2018) and "
            "fold1_train.csv (DCASE 2019); cannot tell the layout"
        )
    return found[0]


def read_table(path: Path, *, header: tuple[str, ...] | None, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a tab-separated file into strings with a ``line`` column (1-based line numbers).

    ``header`` is the exact first line expected (None: the file has none). Every row must have
    ``len(columns)`` non-empty fields. Blank lines are skipped.
    """
    try:
        text = path.read_text(encoding=TEXT_ENCODING)  # a UTF-8 BOM is accepted
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    lines = [(i, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n"), start=1)]
    lines = [(i, ln) for i, ln in lines if ln.strip()]
    if header is not None:
        if not lines or tuple(lines[0][1].split("\t")) != header or lines[0][0] != 1:
            got = lines[0][1] if lines and lines[0][0] == 1 else ""
            raise DatasetError(f"{path}, line 1: header is {got!r}, expected {chr(9).join(header)!r} (tab-separated)")
        lines = lines[1:]
    rows = [ln.split("\t") for _, ln in lines]
    for (i, ln), fields in zip(lines, rows):
        if len(fields) != len(columns):
            raise DatasetError(
                f"{path}, line {i}: expected {len(columns)} tab-separated fields {list(columns)}, "
                f"got {len(fields)}: {ln!r}"
            )
        for name, value in zip(columns, fields):
            if not value.strip():
                raise DatasetError(f"{path}, line {i}: empty field {name!r}: {ln!r}")
    df = pd.DataFrame(rows, columns=list(columns), dtype=str) if rows else pd.DataFrame(
        {c: pd.Series(dtype=str) for c in columns})
    df = df.apply(lambda s: s.str.strip()) if len(df) else df
    df["line"] = [i for i, _ in lines]
    return df


def _first_bad(df: pd.DataFrame, mask, path: Path, message) -> None:
    """Raise for the first row where ``mask`` holds; ``message(row)`` describes it."""
    if mask.any():
        bad = df[mask]
        row = bad.iloc[0]
        more = f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""
        raise DatasetError(f"{path}, line {row['line']}: {message(row)}{more}")


def _check_relative(meta: pd.DataFrame, path: Path) -> None:
    def unsafe(name: str) -> bool:
        p = PurePosixPath(name)
        return p.is_absolute() or ".." in p.parts or "\\" in name

    _first_bad(meta, meta["filename"].map(unsafe), path,
               lambda r: f"filename {r['filename']!r} must be a relative path inside the dataset folder")


def _check_labels(meta: pd.DataFrame, column: str, allowed, path: Path, what: str) -> None:
    if allowed is None:
        return
    allowed = list(allowed)
    _first_bad(meta, ~meta[column].isin(allowed), path,
               lambda r: f"unknown {what} label {r[column]!r} (allowed: {allowed})")


def _check_audio_exists(meta: pd.DataFrame, root: Path, path: Path) -> None:
    """One directory listing per audio folder, not one stat per clip."""
    parents = meta["filename"].map(lambda f: f.rsplit("/", 1)[0] if "/" in f else "")
    present: set[str] = set()
    for parent in parents.unique():
        folder = root / parent
        try:
            with os.scandir(folder) as it:
                present.update(f"{parent}/{e.name}" if parent else e.name for e in it if e.is_file())
        except FileNotFoundError:
            pass
    _first_bad(meta, ~meta["filename"].isin(present), path,
               lambda r: f"audio file {r['filename']!r} does not exist ({root / r['filename']})")


def read_meta(root: Path, *, scene_labels=None, device_labels=None, check_files: bool = True) -> pd.DataFrame:
    """Validated ``meta.csv``: columns filename, scene, identifier, device, line."""
    path = root / "meta.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: missing (is {root} a DCASE Task 1B dataset folder?)")
    meta = read_table(path, header=META_HEADER, columns=META_HEADER)
    meta = meta.rename(columns={"scene_label": "scene", "source_label": "device"})
    _check_relative(meta, path)
    dup = meta["filename"].duplicated(keep="first")
    first_line = meta.drop_duplicates("filename").set_index("filename")["line"]
    _first_bad(meta, dup, path,
               lambda r: f"duplicate filename {r['filename']!r} (first at line {first_line[r['filename']]})")
    _check_labels(meta, "scene", scene_labels, path, "scene")
    _check_labels(meta, "device", device_labels, path, "device")
    if check_files:
        _check_audio_exists(meta, root, path)
    return meta


def read_split(path: Path, meta: pd.DataFrame, *, header, with_scene: bool) -> pd.DataFrame:
    """A split file checked against meta.csv: columns filename, line (and scene)."""
    columns = ("filename", "scene_label") if with_scene else ("filename",)
    df = read_table(path, header=header, columns=columns)
    dup = df["filename"].duplicated(keep="first")
    _first_bad(df, dup, path, lambda r: f"duplicate filename {r['filename']!r}")
    known = meta.set_index("filename")
    _first_bad(df, ~df["filename"].isin(known.index), path,
               lambda r: f"{r['filename']!r} is not in {path.parent.parent / 'meta.csv'}")
    if with_scene:
        meta_scene = df["filename"].map(known["scene"])
        _first_bad(df, df["scene_label"] != meta_scene, path,
                   lambda r: (f"scene {r['scene_label']!r} of {r['filename']!r} disagrees with meta.csv "
                              f"({known.at[r['filename'], 'scene']!r}, line {known.at[r['filename'], 'line']})"))
    return df


def read_dataset(root: str | os.PathLike, *, scene_labels=None, device_labels=None,
                 check_files: bool = True) -> pd.DataFrame:
    """One validated row per clip of a DCASE 2018/2019 Task 1B development folder.

    Columns (sorted by filename): ``filename`` (relative, ``audio/....wav``), ``path`` (absolute),
    ``scene``, ``identifier``, ``device``, ``split`` (``train``; ``test`` for fold1_evaluate; ``none``
    for clips in neither). ``scene_labels``/``device_labels``, when given, are the allowed labels.
    ``check_files`` checks that every meta row's audio file exists.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    layout = detect_layout(root)
    fmt = LAYOUTS[layout]
    meta = read_meta(root, scene_labels=scene_labels, device_labels=device_labels, check_files=check_files)
    train_path, eval_path, test_path = (fmt.path(root, w) for w in ("train", "evaluate", "test"))
    train = read_split(train_path, meta, header=fmt.train_header, with_scene=True)
    evaluate = read_split(eval_path, meta, header=fmt.train_header, with_scene=True)
    if test_path.is_file():
        read_split(test_path, meta, header=fmt.test_header, with_scene=False)
    both = evaluate.merge(train[["filename", "line"]], on="filename", suffixes=("", "_train"))
    if len(both):
        r = both.iloc[0]
        raise DatasetError(
            f"{eval_path}, line {r['line']}: {r['filename']!r} is also in {train_path.name} "
            f"(line {r['line_train']}); a clip cannot be in both train and evaluate"
            + (f" ({len(both) - 1} more such clips)" if len(both) > 1 else "")
        )
    split = pd.Series("none", index=meta.index)
    split[meta["filename"].isin(train["filename"])] = "train"
    split[meta["filename"].isin(evaluate["filename"])] = "test"
    base = root.resolve()
    out = pd.DataFrame({
        "filename": meta["filename"],
        "path": [str(base / f) for f in meta["filename"]],
        "scene": meta["scene"],
        "identifier": meta["identifier"],
        "device": meta["device"],
        "split": split,
    })
    out = out.sort_values("filename", kind="stable").reset_index(drop=True)
    out.attrs["layout"] = layout
    return out


def write_index(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Store a :func:`read_dataset` frame as CSV (atomic), columns in :data:`INDEX_COLUMNS` order.

    Columns added by later stages (e.g. ``audio_path`` from :func:`caanet.audio.prepare_audio`)
    follow, in their order.
    """
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: index frame lacks columns {missing}")
    extra = [c for c in df.columns if c not in INDEX_COLUMNS]
    write_csv_atomic(path, df[list(INDEX_COLUMNS) + extra])


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read an index written by :func:`write_index`, checking columns, empty values and split names."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: index file missing")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=TEXT_ENCODING)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CSV index ({exc})") from None
    if tuple(df.columns[: len(INDEX_COLUMNS)]) != INDEX_COLUMNS:
        raise DatasetError(f"{path}, line 1: columns are {list(df.columns)}, expected {list(INDEX_COLUMNS)} first")
    df["line"] = range(2, len(df) + 2)
    for column in INDEX_COLUMNS:
        _first_bad(df, df[column] == "", path, lambda r, c=column: f"empty {c!r}")
    _first_bad(df, ~df["split"].isin(SPLITS), path,
               lambda r: f"split {r['split']!r} is not one of {list(SPLITS)}")
    _first_bad(df, df["filename"].duplicated(), path, lambda r: f"duplicate filename {r['filename']!r}")
    return df.drop(columns="line")


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Clip counts per device x split x scene (long format, zeros included): device, split, scene, n_clips."""
    counts = df.groupby(["device", "split", "scene"]).size()
    full = pd.MultiIndex.from_product(
        [sorted(df["device"].unique()), [s for s in SPLITS if s in set(df["split"])], sorted(df["scene"].unique())],
        names=["device", "split", "scene"],
    )
    return counts.reindex(full, fill_value=0).rename("n_clips").reset_index()
