"""DCASE Task 1's system output file (``caanet predict --format dcase``), and a check of it.

The format of the DCASE 2020-2025 Task 1 submissions, as the organisers' baselines write it
(toni-heittola/dcase2020_task1_baseline ``task1a.py``: ``fields = ['filename', 'scene_label'] +
scene_labels``, dcase_util's tab-separated CSV with a header) and their submission validators check it
(toni-heittola/dcase2020_task1_submission_validator and dcase2024_task1_submission_validator,
``validate_output``):

* tab-separated, one header row: ``filename``, ``scene_label``, then one column per scene named by the
  scene label (the validators list them in sorted order: ``airport, bus, metro, metro_station, park,
  public_square, shopping_mall, street_pedestrian, street_traffic, tram``); every row has exactly
  those fields;
* ``filename``: the file's path relative to the dataset root, ``audio/<name>.wav`` (the validators
  read the name after the last ``/``, require the ``.wav`` extension and refuse a name twice);
* ``scene_label``: the predicted scene, one of the labels;
* one score per scene, a number: here the class probability (they sum to one: what DCASE's log loss
  reads).

The validators also check that the names are the evaluation set's (``<index>.wav``, 0-based, and
their count); that only holds for a prediction of that set, and is left to them.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Iterable, Mapping, Sequence

from caanet.errors import ConfigError

FIELDS = ("filename", "scene_label")
"""The first two columns, before one per scene."""
AUDIO_FOLDER = "audio"
"""The folder of the audio in a DCASE dataset, which the file names are relative to."""
PROBABILITY_TOLERANCE = 1e-6
"""How far from 1 a row's probabilities may sum (they are written with 10 significant digits)."""


def dcase_filename(path: str | os.PathLike) -> str:
    """``audio/<name>``: the DCASE form of a file's name (its name after the last folder separator)."""
    name = os.path.basename(os.fspath(path).replace("\\", "/"))
    return f"{AUDIO_FOLDER}/{name}"


def check_filenames(paths: Iterable[str | os.PathLike]) -> None:
    """Refuse files that the DCASE format cannot tell apart (two with one name, in different folders) or
    that it does not accept (not ``.wav``): ConfigError naming them. Called before any file is
    classified."""
    seen: dict[str, str] = {}
    for path in map(os.fspath, paths):
        name = dcase_filename(path)
        if not name.lower().endswith(".wav"):
            raise ConfigError(f"{path}: DCASE's output format names .wav files (the submission validators refuse "
                              "other extensions); use --format csv or json for other audio")
        if name in seen:
            raise ConfigError(f"{seen[name]} and {path} have one name, {name!r}: DCASE's output format cannot tell "
                              "them apart (its file names are relative to the dataset's audio folder)")
        seen[name] = path


def format_dcase_output(records: Sequence[Mapping], scene_labels: Sequence[str]) -> str:
    """DCASE's system output for ``records`` (``caanet predict``'s: ``file``, ``scene``,
    ``probabilities`` {scene: p}): the header, then one row per record (module docstring). Scene
    columns in sorted label order; each row's probabilities divided by their sum in float64 (the
    model's are float32: they sum to one within about 1e-7) and written with 10 significant digits."""
    columns = sorted(scene_labels)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow([*FIELDS, *columns])
    for r in records:
        p = [float(r["probabilities"][s]) for s in columns]
        total = math.fsum(p)
        if not total > 0 or not math.isfinite(total):
            raise ConfigError(f"{r['file']}: the probabilities sum to {total!r}, they cannot be written")
        w.writerow([dcase_filename(r["file"]), r["scene"], *(f"{x / total:.10g}" for x in p)])
    return buf.getvalue()


def validate_dcase_output(text: str, scene_labels: Sequence[str]) -> list[str]:
    """The problems of a DCASE system output (``[]`` when there are none), by the submission validators'
    rules (module docstring; not the evaluation set's names and count), plus: the header in the
    baselines' order, the predicted scene the most probable one, probabilities in [0, 1] summing to 1
    within :data:`PROBABILITY_TOLERANCE`. Each problem names the row (1 = the first after the header)."""
    labels = sorted(scene_labels)
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not rows:
        return ["empty output: no header row"]
    header, problems, names = rows[0], [], set()
    if header != [*FIELDS, *labels]:
        problems.append(f"header {header} is not {[*FIELDS, *labels]}")
        return problems
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            problems.append(f"row {i}: {len(row)} fields, not {len(header)}")
            continue
        filename, scene, *values = row
        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
        if not filename.startswith(f"{AUDIO_FOLDER}/"):
            problems.append(f"row {i}: filename {filename!r} is not {AUDIO_FOLDER}/<name>")
        if not name.endswith(".wav"):
            problems.append(f"row {i}: filename {filename!r} has no .wav extension")
        if name in names:
            problems.append(f"row {i}: duplicate file {name!r}")
        names.add(name)
        if scene not in labels:
            problems.append(f"row {i}: scene_label {scene!r} is not one of {labels}")
        try:
            p = [float(v) for v in values]
        except ValueError:
            problems.append(f"row {i}: a score is not a number ({values})")
            continue
        if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in p):
            problems.append(f"row {i}: a probability is outside [0, 1] ({values})")
        if abs(sum(p) - 1.0) > PROBABILITY_TOLERANCE:
            problems.append(f"row {i}: probabilities sum to {sum(p)!r}, not 1")
        if scene in labels and p and p[labels.index(scene)] < max(p):
            problems.append(f"row {i}: scene_label {scene!r} is not the most probable scene")
    return problems
