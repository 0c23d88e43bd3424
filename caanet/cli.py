"""The ``caanet`` command: use a trained CAA-Net on any recording.

``caanet predict``, ``caanet explain`` and ``caanet inspect`` (``caanet --help``). Exit status: 0
on success; 1 for a user error (a bad file, model or option value: one line naming it on stderr,
no traceback; ``predict`` runs every other file first); 2 for a usage error (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

from caanet import __version__

EXIT_OK, EXIT_USER, EXIT_USAGE = 0, 1, 2
FORMATS = ("table", "csv", "json", "dcase")
PROGRESS_MIN_FILES = 8  # a progress bar from this many files on (stderr only, and only on a terminal)
BATCH_DEFAULT = 4  # caanet.inference.DEFAULT_BATCH (not imported here: --help does not load torch; a test checks)

DESCRIPTION = """\
Use a trained CAA-Net (Ren et al., IEEE TMM 2020) on audio recordings.

A model file is the model.pt of a trained cell (results/cells/<dataset>/<cell>/seed<N>/model.pt):
it carries the architecture, the scene and device labels, the feature parameters and the
normalisation statistics, so audio is processed exactly as in training. A checkpoint of the
authors' code is used with its architecture given as options (--network, --strategy,
--cond-layer) and --norm-from a feature cache of its training data.

exit status: 0 success; 1 a bad file, model or option value (one message naming it);
2 a usage error."""

PREDICT_HELP = """\
Classify recordings: the scene (and, for multi-task models, the recording device).

Any file libsndfile reads (WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, ...: any sample rate, channel
count and bit depth; also a FIFO, and - for standard input) is read block by block to the end of
its stream, averaged to mono and resampled (soxr HQ) to the model's rate, exactly as the
pipeline prepares its data; memory does not grow with the recording's length. A recording longer
than the model's clip length is classified in consecutive windows of that length (the last window
ends at the recording's end) and its result is the mean of the windows' log-probabilities; a
shorter one is zero-padded at the end, as the feature cache pads.

AUDIO may be files (any name; one starting with - goes after --), folders and glob patterns
(quote them). A folder is searched recursively: files with an audio suffix (.wav, .flac, .mp3,
.ogg, .opus, .aiff, ...) are classified, and any other file libsndfile opens too; the rest (text,
images, FIFOs, broken links) are named on stderr as skipped, which is not an error. A file that
cannot be used is reported on stderr naming it; the others still run; the exit status is then 1."""

EXPLAIN_HELP = """\
Draw the paper's Fig. 7 for one recording: its log-mel spectrogram and, below it, where the model
looked for a class. Attention heads (att, roi_att) show the normalised attention map A' (Eq. 5-6),
which sums to 1 over time and frequency; max/avg heads show the class activation map of the
linear head (exact for global average pooling). Where the head's grid is coarser than the
spectrogram (cnn_pool: 16 x 16 bins per cell; roi_att: ROI regions), each cell is spread evenly
over the bins it covers. Flatten and ROI heads have no such map (an error says so).
Time is in seconds, frequency on the mel scale labelled in Hz. The class is the predicted one,
--class NAME, or the --top-k K most probable."""

EXAMPLES = """\
examples:
  caanet predict model.pt recording.flac more/*.wav a_folder/
  caanet predict model.pt a_folder/ --format csv -o predictions.csv
  caanet predict teacher_forcing_model.pt clip.wav --device b
  caanet explain model.pt clip.wav -o fig7.png --top-k 3 --npy maps.npy
  caanet inspect model.pt
  caanet inspect results/features/embedded2018-<hash>.h5
  caanet predict state_dict.pt clip.wav --network CnnAtrous_Attention --strategy multi_task \\
      --cond-layer 4 --norm-from results/features/dcase2018_task1b-<hash>.h5"""

PREDICT_OUTPUT = """\
output: per file the predicted scene and its probability, the --top-k most probable scenes and,
for multi-task models, CNN-d's predicted device and its probability. table: aligned text; csv:
also every scene's probability (p_<scene>) and device's (p_device_<label>); json: {"model": ...,
"results": [...]} with all probabilities; dcase: DCASE Task 1's system output (tab-separated
filename audio/<name>.wav, scene_label, one probability column per scene; caanet/dcase_format.py).
Probabilities are those of the mean log-probabilities of a recording's windows, renormalised."""

INSPECT_HELP = """\
Describe a feature cache (.h5: parameters and clip counts per device, scene and split) or a model
file (its cell, labels, feature parameters, architecture and a summary of its training metrics)."""


class UserError(Exception):
    """A bad input the user can fix: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*a, **kw)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("authors' checkpoints (only for a state_dict.pt or md_*_iters.tar of the reference code)")
    g.add_argument("--network", metavar="NAME",
                   help="topology (cnn_pool, cnn_nopool, atrous; then --pooling) or a reference class name "
                        "such as CnnAtrous_Attention")
    g.add_argument("--pooling", metavar="HEAD", help="flatten, max, avg, roi, att or roi_att (with a topology)")
    g.add_argument("--strategy", metavar="S", help="single_device, joint, teacher_forcing or multi_task")
    g.add_argument("--cond-layer", type=int, metavar="L", help="the conditioned layer 1-4 (teacher_forcing, multi_task)")
    g.add_argument("--norm-from", metavar="CACHE.h5",
                   help="feature cache whose training split gives the per-mel normalisation, the feature "
                        "parameters and the labels")


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="LABEL",
                   help="the recording device of the audio (required by teacher-forcing models, which take it as input)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="torch threads (default: 1 per worker of --jobs, else torch's choice)")
    p.add_argument("--batch-size", type=_positive_int, default=BATCH_DEFAULT, metavar="N",
                   help="windows per forward pass; memory grows with it, speed hardly (default: %(default)s)")



def build_parser() -> argparse.ArgumentParser:
    """The ``caanet`` argument parser (subcommands predict, explain, inspect)."""
    parser = _Parser(prog="caanet", description=DESCRIPTION, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"caanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("predict", help="classify recordings (scene, device)", description=PREDICT_HELP,
                       epilog=PREDICT_OUTPUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="a model.pt written by the workflow (or the cell's folder holding it), or an authors' checkpoint")
    p.add_argument("audio", metavar="AUDIO", nargs="+", help="audio files, folders or glob patterns")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: %(default)s)")
    p.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                   help="how many of the most probable scenes to list (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the results to FILE (atomically) instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="worker threads, each reading, transforming and classifying a share of the files "
                        "(default: %(default)s, the CPU count up to 2)")
    _add_runtime_options(p)
    _add_model_options(p)

    e = sub.add_parser("explain", help="draw Fig. 7 (attention / class activation map) for one recording",
                       description=EXPLAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", metavar="MODEL", help="a model.pt written by the workflow, or an authors' checkpoint")
    e.add_argument("audio", metavar="AUDIO", help="one recording (any file libsndfile reads)")
    e.add_argument("-o", "--output", metavar="OUT.png", required=True, help="the figure (.png, .pdf or .svg)")
    cls = e.add_mutually_exclusive_group()
    cls.add_argument("--class", dest="class_name", metavar="NAME", help="explain this scene instead of the predicted one")
    cls.add_argument("--top-k", type=_positive_int, default=1, metavar="K",
                     help="explain the K most probable scenes, one panel each (default: %(default)s)")
    e.add_argument("--npy", metavar="MAP.npy",
                   help="also write the raw maps: float32 (classes, windows, P, Q) on the head's grid")
    _add_runtime_options(e)
    _add_model_options(e)

    i = sub.add_parser("inspect", help="describe a feature cache or a model file", description=INSPECT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("path", metavar="PATH", help="a feature cache (.h5), a model file (.pt) or a cell's output folder")
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    return parser


# ------------------------------------------------------------------------------------------ helpers

def _load_model(args):
    from caanet.modelfile import load_model_file, load_reference_model

    reference_opts = [args.network, args.pooling, args.strategy, args.cond_layer, args.norm_from]
    if args.network is not None or args.strategy is not None:
        if args.network is None or args.strategy is None:
            raise UserError("an authors' checkpoint needs both --network and --strategy")
        return load_reference_model(args.model, network=args.network, pooling=args.pooling, strategy=args.strategy,
                                    cond_layer=args.cond_layer, norm_from=args.norm_from)
    if any(v is not None for v in reference_opts):
        raise UserError("--pooling, --cond-layer and --norm-from are for authors' checkpoints, with --network "
                        "and --strategy")
    return load_model_file(args.model)


@contextlib.contextmanager
def _torch_threads(threads):
    """torch's intra-op thread count set to ``threads`` (None: unchanged) and restored afterwards
    (``main`` may be called in-process)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_output(text: str, output: str | None) -> None:
    """``text`` as UTF-8 to stdout or atomically to ``output``; a file name that is not UTF-8 (held
    with surrogate escapes, as Python decodes it) is written as its own bytes."""
    data = text.encode("utf-8", "surrogateescape")
    if output is None:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (tests redirect stdout to a StringIO)
            sys.stdout.write(text)
        else:
            sys.stdout.flush()
            buffer.write(data)
            buffer.flush()
        return
    from caanet.io import atomic_path

    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise UserError(f"{printable(output)}: cannot write ({e.strerror or e})") from None


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) escaped as ``\\n``,
    ``\\t``, ``\\xNN``, and bytes that are not UTF-8 (surrogate escapes) as ``\\xNN``."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _err(message: str) -> None:
    print(f"caanet: error: {printable(message)}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"caanet: {printable(message)}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ predict

def prediction_record(pred, mf, top_k: int, device_label: str | None) -> dict:
    """One file's result as plain data (the JSON output; table and CSV are made from it)."""
    import numpy as np

    probs = np.exp(pred.scene_logprob)
    best = int(np.argmax(pred.scene_logprob))
    rec = {
        "file": pred.path, "duration_s": round(pred.duration_s, 3), "windows": pred.n_windows,
        "scene": mf.scene_labels[best], "probability": float(probs[best]),
        "top": [{"scene": s, "probability": p} for s, p in pred.top(mf.scene_labels, top_k)],
        "probabilities": {s: float(p) for s, p in zip(mf.scene_labels, probs)},
    }
    if pred.device_logprob is not None:
        dp = np.exp(pred.device_logprob)
        d = int(np.argmax(dp))
        rec["device"] = mf.device_labels[d]
        rec["device_probability"] = float(dp[d])
        rec["device_probabilities"] = {k: float(v) for k, v in zip(mf.device_labels, dp)}
    elif device_label is not None:
        rec["device"] = device_label
        rec["device_given"] = True
    return rec


def format_records(records: list[dict], fmt: str, top_k: int, mf, meta: dict) -> str:
    """``records`` as ``table`` (aligned text), ``csv``, ``json`` or ``dcase`` (:mod:`caanet.dcase_format`)."""
    multi = mf.device_source == "predicted"
    if fmt == "dcase":
        from caanet.dcase_format import format_dcase_output

        return format_dcase_output(records, mf.scene_labels)
    if fmt == "json":
        return json.dumps({"model": meta, "results": records}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        cols = ["file", "duration_s", "windows", "scene", "probability"]
        for k in range(1, top_k + 1):
            cols += [f"top{k}_scene", f"top{k}_probability"]
        if multi:
            cols += ["device", "device_probability"] + [f"p_device_{d}" for d in mf.device_labels]
        elif mf.device_source == "oracle":
            cols += ["device"]
        cols += [f"p_{s}" for s in mf.scene_labels]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in records:
            row = {k: r.get(k) for k in ("file", "duration_s", "windows", "scene", "device")}
            row["probability"] = f"{r['probability']:.6f}"
            for k, t in enumerate(r["top"], 1):
                row[f"top{k}_scene"], row[f"top{k}_probability"] = t["scene"], f"{t['probability']:.6f}"
            if multi:
                row["device_probability"] = f"{r['device_probability']:.6f}"
                row.update({f"p_device_{d}": f"{p:.6f}" for d, p in r["device_probabilities"].items()})
            row.update({f"p_{s}": f"{p:.6f}" for s, p in r["probabilities"].items()})
            w.writerow({k: v for k, v in row.items() if k in cols})
        return buf.getvalue()
    header = ["file", "scene", "p", f"top {top_k}"] + (["device", "p(device)"] if multi else [])
    rows = []
    for r in records:
        row = [printable(r["file"]), r["scene"], f"{r['probability']:.3f}",
               ", ".join(f"{t['scene']} {t['probability']:.2f}" for t in r["top"])]
        if multi:
            row += [r["device"], f"{r['device_probability']:.3f}"]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(str(x).ljust(wd) for x, wd in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines) + "\n"


def cmd_predict(args) -> int:
    with _torch_threads(args.threads if args.threads is not None or args.jobs <= 1 else 1):
        return _predict(args)


def _predict(args) -> int:
    from tqdm import tqdm

    from caanet.inference import Predictor, predict_files
    from caanet.inputs import expand_audio_paths

    mf = _load_model(args)
    predictor = Predictor(mf, device_label=args.device, batch_size=args.batch_size)
    if args.top_k > len(mf.scene_labels):
        raise UserError(f"--top-k {args.top_k}: the model has only {len(mf.scene_labels)} scenes")
    inputs = expand_audio_paths(args.audio)
    paths, problems = inputs.paths, inputs.problems
    for path, reason in inputs.skipped:
        _note(f"skipped {path}: {reason}")
    if args.format == "dcase":  # names DCASE's format cannot hold are refused before any file is classified
        from caanet.dcase_format import check_filenames

        check_filenames(paths)
    failed = 0
    for _, message in problems:
        _err(message)
        failed += 1
    records = []
    show = not args.quiet and len(paths) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    group = max(1, min(args.batch_size, -(-len(paths) // max(args.jobs, 1)))) if paths else 1
    with tqdm(total=len(paths), unit="file", desc="predict", disable=not show, file=sys.stderr) as bar:
        for path, pred, error in predict_files(predictor, paths, jobs=args.jobs, group=group):
            if error is not None:
                bar.clear()
                _err(error)
                failed += 1
            else:
                records.append(prediction_record(pred, mf, args.top_k, args.device))
            bar.update(1)
    meta = {"path": str(mf.path), "cell_id": mf.cell_id, "kind": mf.kind, "clip_seconds": mf.clip_seconds,
            "sample_rate": mf.params.sample_rate, "device_source": mf.device_source}
    if args.device is not None:
        meta["device_given"] = args.device
    if records or not failed:
        _write_output(format_records(records, args.format, args.top_k, mf, meta), args.output)
    if failed:
        _err(f"{failed} of {len(paths) + len(problems)} input(s) could not be classified (named above)")
        return EXIT_USER
    return EXIT_OK


# ------------------------------------------------------------------------------------------ explain

def cmd_explain(args) -> int:
    with _torch_threads(args.threads):
        return _explain(args)


def _explain(args) -> int:
    from caanet.explain import explain_clip, map_kind
    from caanet.inference import Predictor
    from caanet.render.explain import FORMATS as FIG_FORMATS, draw_explanation

    out = Path(args.output)
    if out.suffix.lower().lstrip(".") not in FIG_FORMATS:
        raise UserError(f"-o {args.output}: the figure's name must end in .png, .pdf or .svg")
    if args.npy is not None and not args.npy.endswith(".npy"):
        raise UserError(f"--npy {args.npy}: the raw map's name must end in .npy")
    mf = _load_model(args)
    map_kind(mf.config.pooling)
    predictor = Predictor(mf, device_label=args.device, batch_size=args.batch_size)
    if not os.path.exists(args.audio) or os.path.isdir(args.audio):
        raise UserError(f"{args.audio}: no such file")
    ex = explain_clip(predictor, args.audio, class_name=args.class_name, top_k=args.top_k)
    try:
        draw_explanation(ex, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    if args.npy is not None:
        import numpy as np

        from caanet.io import atomic_path

        with atomic_path(args.npy) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, ex.raw)
    probs = dict(ex.prediction.top(mf.scene_labels, len(mf.scene_labels)))
    shown = ", ".join(f"{c} (p = {probs[c]:.3f})" for c in ex.classes)
    kind = "attention map" if ex.kind == "attention" else "class activation map"
    print(f"{out}: {kind} of {shown}" + (f"; raw map {args.npy}" if args.npy else ""))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ inspect

def _text_block(d: dict, indent: str = "") -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()) and len(v) <= 12:
            lines.append(f"{indent}{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()))
        elif isinstance(v, dict) and v:
            lines.append(f"{indent}{k}:")
            lines += _text_block(v, indent + "  ")
        elif isinstance(v, list) and len(v) > 16:
            lines.append(f"{indent}{k}: [{', '.join(map(str, v[:16]))}, ... ({len(v)} in all)]")
        elif isinstance(v, list):
            lines.append(f"{indent}{k}: {', '.join(map(str, v)) if v else '-'}")
        else:
            lines.append(f"{indent}{k}: {v}")
    return lines


def inspect_path(path: str) -> dict:
    """The description of a feature cache or a model file (plain data)."""
    import h5py

    from caanet.modelfile import is_model_file, load_model_file

    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.is_dir() and (p / "model.pt").is_file():  # a cell's output folder
        p = p / "model.pt"
    if p.is_dir():
        raise UserError(f"{path}: is a folder; give a feature cache (.h5), a model file (.pt) or a cell's folder")
    if h5py.is_hdf5(str(p)):
        from caanet.features import cache_summary

        return {"type": "feature cache", **cache_summary(p)}
    if is_model_file(p):
        return {"type": "model file", **load_model_file(p).describe()}
    raise UserError(f"{path}: neither a feature cache (HDF5) nor a model file (torch)")


def cmd_inspect(args) -> int:
    info = inspect_path(args.path)
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    if info["type"] == "feature cache":
        order = ["type", "path", "dataset", "n_clips", "params", "params_hash", "n_frames", "n_mels", "by_split",
                 "by_device", "by_scene", "device_split", "device_scene", "n_padded", "n_cropped",
                 "padded_examples", "cropped_examples", "caanet_version"]
    else:
        order = ["type", "path", "kind", "cell_id", "fidelity", "scene_labels", "device_labels", "model_config",
                 "n_parameters", "complexity", "feature_params", "input_shape", "norm_mean_range", "norm_std_range", "training",
                 "train_config", "caanet_version", "code_version"]
    print("\n".join(_text_block({k: info[k] for k in order if k in info})))
    return EXIT_OK


COMMANDS = {"predict": cmd_predict, "explain": cmd_explain, "inspect": cmd_inspect}


def main(argv=None) -> int:
    """Entry point of the ``caanet`` console script; returns the exit status (0, 1 or 2)."""
    from caanet.errors import CaanetError

    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    try:
        with _names_as_bytes_on_stdout():
            return COMMANDS[args.command](args)
    except (UserError, CaanetError) as e:
        _err(str(e))
        return EXIT_USER
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK


@contextlib.contextmanager
def _names_as_bytes_on_stdout():
    """stdout writes a file name that is not UTF-8 (held with surrogate escapes) as its own bytes, as
    :func:`_write_output` does, instead of failing with UnicodeEncodeError under a strict locale;
    restored afterwards (``main`` may be called in-process)."""
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    if errors is None or not hasattr(stream, "reconfigure"):
        yield
        return
    stream.reconfigure(errors="surrogateescape")
    try:
        yield
    finally:
        stream.reconfigure(errors=errors)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
