"""The training loop of one table cell (:class:`CellTrainer`) and the job around it (:func:`train_cell`).

:func:`train_cell` opens the cell's feature cache once, checks spec, config and cache, reads the
cell's clips (:func:`prepare_data`), then trains, checkpoints (:mod:`caanet.training.checkpoint`),
evaluates and writes the outputs (:mod:`caanet.training.outputs`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from caanet.vocab import REPLACING_POLICIES
from caanet.data.loader import (
    CellData,
    held_out_counts,
    held_out_line,
    open_cache,
    prepare_cell_data,
    seen_devices_first,
    validation_split_filenames,
)
from caanet.complexity import measure_model
from caanet.devices import seen_unseen_summary, unseen_policy_for
from caanet.errors import ConfigError, SpecError, TrainingError, config_error
from caanet.evaluation import evaluate_predictions, log_loss_summary
from caanet.fidelity import get_fidelity
from caanet.optim import Adam
from caanet.runtime import keep_freed_memory
from caanet.spec import CellSpec
from caanet.training.batches import (
    BatchOrder,
    ClipTensors,
    _autocast,
    _batch,
    device_accuracy,
    predict_scores,
    validation_accuracy,
)
from caanet.training.checkpoint import (
    CHECKPOINT_FORMAT,
    TrainState,
    checkpoint_code_version,
    fingerprint,
    fingerprint_differences,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from caanet.training.config import (
    TrainConfig,
    effective_config,
    lambda_source,
    learned_lambda_columns,
    learned_or_switched_rule,
    lr_at,
    needs_validation,
)
from caanet.training.outputs import Abandoned, _attention_examples, _predictions_frame, _write_outputs
from caanet.training.process import _as_log, _determinism, _resolve_device, _set_threads, _StopFlag


class Preempted(TrainingError):
    """SIGTERM/SIGINT arrived: the checkpoint is written, the job should be resubmitted to resume."""


# --------------------------------------------------------------------------------------------------
# The cell's data
# --------------------------------------------------------------------------------------------------


def _check_arguments(spec: CellSpec, cfg: TrainConfig) -> None:
    if not isinstance(spec, CellSpec):
        raise SpecError(f"train_cell needs a CellSpec, got {type(spec).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train_cell needs a TrainConfig, got {type(cfg).__name__}")
    spec.validate()
    cfg.validate()


def check_spec(features, spec: CellSpec, cfg: TrainConfig) -> tuple[list, list]:
    """Reject a bad spec/config before anything runs; return the cache's ``(scene_labels, device_labels)``.

    ``features``: the cache's path or an open cache (:func:`caanet.data.loader.open_cache`). Raises
    SpecError / ConfigError naming the key, CacheError for a missing or malformed cache."""
    _check_arguments(spec, cfg)
    fid = get_fidelity(spec.fidelity)
    with open_cache(features) as cache:
        scene_labels, device_labels = list(cache.scene_labels), list(cache.device_labels)
        path = cache.path
    if spec.strategy == "single_device" and spec.device not in device_labels:
        raise SpecError(f"cell {spec.cell_id}: device {spec.device!r} is not in the cache {path} "
                        f"(devices: {device_labels})")
    if spec.lambda_rule == "switch" and lambda_source(cfg, fid) == "validation" and cfg.val_fraction == 0:
        raise config_error("training.val_fraction", cfg.val_fraction,
                           f"a number > 0: the lambda rule of {spec.cell_id} measures CNN-d on a validation split")
    return scene_labels, device_labels


def validation_filenames(features, spec: CellSpec, cfg: TrainConfig) -> set[str]:
    """Filenames of the validation clips of ``spec``'s seed (``cfg.val_fraction``): whole locations carved
    from the training split of ALL devices (:func:`caanet.data.loader.validation_split_filenames`).
    ``features``: the cache's path or an open cache."""
    with open_cache(features) as cache:
        return validation_split_filenames(cache, cfg.val_fraction, spec.seed)


def prepare_data(features, spec: CellSpec, cfg: TrainConfig, *, score_validation: bool = False,
                 hold_validation: bool = False) -> CellData:
    """Load the cell's clips (one device's for ``single_device``), carve the validation split (only where
    :func:`~caanet.training.config.needs_validation`: the cell uses one, or ``hold_validation``), fit and
    apply the per-mel-bin normalisation (:func:`caanet.data.loader.prepare_cell_data`). A cell that only
    holds the split out (``hold_validation``) may find none of its device's clips in it (a single-device
    cell): it then trains on all of them, like the others of its dataset. ``features``: the cache's path
    or an open cache."""
    fid = get_fidelity(spec.fidelity)
    uses = needs_validation(spec, cfg, fid, score_validation=score_validation)
    with open_cache(features) as cache:
        return prepare_cell_data(
            cache, cell_id=spec.cell_id, devices=[spec.device] if spec.strategy == "single_device" else None,
            hold_out_validation=uses or bool(hold_validation), require_validation=uses,
            val_fraction=cfg.val_fraction, seed=spec.seed)


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


class CellTrainer:
    """The training loop of one cell: one :meth:`step` per iteration, checkpoints, final evaluation."""

    def __init__(self, spec: CellSpec, cfg: TrainConfig, data: CellData, dev: torch.device, say, *,
                 method_settings=None, method_cache=None, feature_params=None):
        """``method_settings``: the settings object of ``spec.method`` (:func:`caanet.methods.method_settings`);
        ``method_cache``: its derived cache for an ``augment`` method; ``feature_params``: the cell's
        :class:`caanet.features.FeatureParams` (what a derived cache is checked against)."""
        from caanet.methods import build_transform
        from caanet.models import ModelConfig, build_model

        self.spec, self.cfg, self.data, self.dev, self.say = spec, cfg, data, dev, say
        self.fidelity = get_fidelity(spec.fidelity)
        self.multi = spec.device_source == "predicted"  # the multi-task strategies: CNN-d and Eq. 2
        self.learned = spec.lambda_rule == "learned"
        n_seen = data.n_seen if data.n_seen is not None else len(data.device_labels)
        self.unseen_policy = unseen_policy_for(cfg.unseen_device, spec.strategy)
        # the test device labels reach the model: teacher forcing, or a multi-task policy that must spot
        # the clips of unseen devices (caanet.devices)
        self.oracle = spec.device_source == "oracle" or (
            self.multi and self.unseen_policy in REPLACING_POLICIES and bool(np.any(data.test.device >= n_seen)))
        n_frames, n_mels = data.train.x.shape[1:]
        self.model_cfg = ModelConfig.from_spec(
            spec, n_classes=len(data.scene_labels), n_devices=n_seen, channels=cfg.channels,
            device_channels=cfg.device_channels, input_shape=(int(n_frames), int(n_mels)),
            unseen_device=self.unseen_policy)
        # the scene network is initialised from torch's seed (set by the caller), CNN-d from its own stream
        # of the cell's seed: every argmax multi-task cell of a dataset and seed trains the same CNN-d
        self.model = build_model(self.model_cfg, device_net_seed=spec.seed).to(dev)
        self.model.train()
        self.rule = learned_or_switched_rule(spec, cfg, self.fidelity, dev)
        params = list(self.model.parameters()) + (self.rule.parameters() if self.learned else [])
        self.optimizer = Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)  # no torch._dynamo import
        self.state = TrainState()
        self.method_settings = method_settings
        # a device-robustness method's training transform (caanet.methods): random draws are a pure
        # function of (seed, iteration), so nothing of it needs checkpointing
        self.transform = build_transform(spec, method_settings, data=data, derived=method_cache, dev=dev,
                                         params=feature_params)
        self.fingerprint = fingerprint(spec, cfg, data, method_settings)
        self._t0 = time.monotonic()
        # bf16 autocast on CUDA where the config and the fidelity allow it (the reference runs float32)
        self.amp = bool(cfg.amp and self.fidelity.bf16_autocast)
        self.train_t, self.test_t = ClipTensors.of(data.train, dev), ClipTensors.of(data.test, dev)
        self.batches = BatchOrder(data.train_idx, cfg.batch_size, spec.seed, dev)
        if self.rule.source == "test":  # CNN-d can only name seen devices: its accuracy is on theirs
            self.lambda_clips, self.lambda_pos = self.test_t, np.flatnonzero(data.test.device < n_seen)
        else:
            self.lambda_clips, self.lambda_pos = self.train_t, data.val_idx

    @property
    def name(self) -> str:
        return f"{self.spec.cell_id} seed {self.spec.seed}"

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.monotonic() - self._t0

    # ---- checkpoints

    def state_dict(self) -> dict:
        """Everything a resumed job needs (a checkpoint, :mod:`caanet.training.checkpoint`): format,
        fingerprint, model, optimiser, lambda rule, RNG states and :class:`TrainState`'s fields."""
        return {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "lambda_rule": self.rule.state_dict(), "rng": rng_state(),
                **self.state.state_dict(), "elapsed_s": float(self.elapsed())}

    def load_state_dict(self, state: dict, source="the state") -> None:
        """Continue from ``state`` (:meth:`state_dict`, or :func:`~caanet.training.checkpoint.read_checkpoint`).
        A state of another job (spec, config less indifferent keys, data) raises TrainingError naming
        ``source`` and the differing keys, before anything is loaded."""
        diffs = fingerprint_differences(state["fingerprint"], self.fingerprint)
        if diffs:
            raise TrainingError(f"{source} belongs to a different job; refusing to resume ({'; '.join(diffs)}). "
                                "Delete it to start over.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rule.load_state_dict(state["lambda_rule"])
        self.state = TrainState.from_state_dict(state)
        self._t0 = time.monotonic()
        set_rng_state(state["rng"])

    def save(self, path: Path, code_version) -> None:
        write_checkpoint(path, {**self.state_dict(), "code_version": code_version})

    def resume(self, path: Path, code_version) -> bool:
        """Load ``path`` if present (discarding one of other code); refuse one of another job."""
        if path.exists() and code_version is not None:
            stale = checkpoint_code_version(path)
            if stale != code_version:
                self.say(f"{path}: written by code {stale!r}, this is {code_version!r}: starting over")
                path.unlink()
        if not path.exists():
            return False
        self.load_state_dict(read_checkpoint(path), source=path)
        self.say(f"{self.name}: resuming from {path} at iteration {self.state.iteration}")
        return True

    # ---- one iteration

    def step(self, it: int) -> tuple[list[float], float, float | None]:
        """Train on the batch of 0-based iteration ``it``; return ``([loss, loss_scene, loss_device], lr, lambda)``."""
        cfg = self.cfg
        lr = lr_at(it, cfg, self.fidelity)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        positions = self.batches(it)
        x, y, d = _batch(self.train_t, positions, self.dev)  # indexed on the device
        x_in = self.transform(x, positions, it) if self.transform is not None else x
        # CNN-d learns the true device of the untransformed clips (caanet.methods: Method.combination)
        device_x = x if (x_in is not x and self.spec.device_source == "predicted") else None
        lam = self.rule.value if self.multi else None
        with _autocast(self.dev, self.amp):
            out = self.model(x_in, d if self.oracle else None, device_x=device_x)
        # losses in float32 (the network's outputs may be bf16 under autocast)
        loss_scene = F.nll_loss(out.scene.float(), y)
        loss_device = F.nll_loss(out.device.float(), d) if self.multi else torch.zeros((), device=loss_scene.device)
        if self.learned:
            loss = self.rule.combine(loss_scene, loss_device)
        else:
            loss = loss_scene + lam * loss_device if self.multi else loss_scene
        v_loss, v_scene, v_device = torch.stack([loss.detach(), loss_scene.detach(), loss_device.detach()]).tolist()
        values = {"loss_scene": v_scene, "loss_device": v_device, "loss": v_loss}  # one device->host sync
        for key, v in values.items():
            if not math.isfinite(v):
                raise TrainingError(f"{self.name}: {key} is {v} at iteration {it + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return [values["loss"], values["loss_scene"], values["loss_device"]], lr, lam

    def after_step(self, done: int, values: list[float], lr: float, lam: float | None) -> None:
        """Bookkeeping after ``done`` completed iterations: lambda check, validation, metrics row."""
        cfg, st = self.cfg, self.state
        st.iteration = done
        st.sums += values
        st.n_sum += 1
        dev_acc = None
        if self.multi and self.rule.due(done):
            dev_acc = device_accuracy(self.model, self.lambda_clips, self.lambda_pos, dev=self.dev,
                                      batch_size=cfg.eval_batch_size, amp=self.amp)
            before = self.rule.value
            if self.rule.update(done, dev_acc) != before:
                self.say(f"{self.name}: iteration {done}: CNN-d {self.rule.source} accuracy {dev_acc:.4f}; "
                         f"lambda -> {self.rule.value:g}")
        if cfg.selection == "best_val" and (done % cfg.val_every == 0 or done == cfg.iterations):
            acc = validation_accuracy(self.model, self.data, dev=self.dev, cfg=cfg, oracle=self.oracle,
                                      clips=self.train_t, amp=self.amp)
            st.val_history.append([done, acc])
            if st.best is None or acc > st.best["accuracy"]:
                st.best = {"iteration": done, "accuracy": acc,
                           "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        if done % cfg.log_every == 0 or dev_acc is not None or done == cfg.iterations:
            mean = st.sums / st.n_sum
            st.metrics.append({
                "iteration": done, "loss": float(mean[0]), "loss_scene": float(mean[1]),
                "loss_device": float(mean[2]) if self.multi else None, "lr": lr, "lambda": lam,
                "device_acc": dev_acc, "elapsed_s": round(self.elapsed(), 3),
                **learned_lambda_columns(self.rule if self.learned else None),
            })
            st.sums, st.n_sum = np.zeros(3), 0

    # ---- the loop

    def run(self, ck_path: Path, code_version, stop: "_StopFlag", callback=None) -> None:
        """Iterate from the current state to ``cfg.iterations``, checkpointing; SIGTERM -> :class:`Preempted`."""
        cfg = self.cfg
        start = self.state.iteration
        if start >= cfg.iterations:
            return
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=cfg.iterations, initial=start, desc=self.spec.cell_id, unit="it", leave=False)
        try:
            for it in range(start, cfg.iterations):
                values, lr, lam = self.step(it)
                done = it + 1
                self.after_step(done, values, lr, lam)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{values[0]:.3f}")
                elif done % cfg.log_every == 0:
                    self.say(f"{self.name}: iteration {done}/{cfg.iterations} loss {self.state.metrics[-1]['loss']:.4f} "
                             f"lr {lr:.3g}" + (f" lambda {lam:g}" if self.multi else ""))
                if done % cfg.checkpoint_every == 0 or stop.signum is not None:
                    self.save(ck_path, code_version)
                if stop.signum is not None:
                    raise Preempted(f"{self.name}: signal {stop.signum} at iteration {done}; checkpoint written to "
                                    f"{ck_path}, resubmit to resume")
                if callback is not None:
                    callback(done)
        finally:
            if bar is not None:
                bar.close()
        self.save(ck_path, code_version)  # a kill while writing the outputs resumes straight to evaluation

    # ---- evaluation

    def unseen_and_lambda_keys(self, per_device: dict, device_pred: np.ndarray | None) -> dict:
        """evaluation.json's keys beyond the paper: seen/unseen devices and means, the unseen-device
        policy, CNN-d's accuracy on the seen devices' test clips, the lambda rule (and learned weights)."""
        data = self.data
        n_seen = data.n_seen if data.n_seen is not None else len(data.device_labels)
        out = seen_unseen_summary(per_device, data.device_labels[:n_seen])
        out["unseen_device_policy"] = self.unseen_policy if out["unseen_devices"] else None
        seen_test = data.test.device < n_seen
        out["device_accuracy_seen"] = (float(np.mean(device_pred[seen_test] == data.test.device[seen_test]))
                                       if device_pred is not None and seen_test.any() else None)
        out["lambda_rule"] = self.spec.lambda_rule
        out["lambda_final"] = float(self.rule.value) if self.multi else None
        out["loss_log_variances"] = self.rule.weighting.log_vars() if self.learned else None
        return out

    def evaluate(self, code_version=None, reference_device: str | None = None,
                 cache_attrs: dict | None = None) -> tuple[dict, pd.DataFrame, dict | None]:
        """Evaluate the selected weights on the test clips: ``(evaluation, predictions, attention or None)``.

        ``reference_device`` (default: the cache's first device) is left out of ``mean_bc``. Where the cell
        holds a validation split, the selected weights' ``validation_accuracy`` (Avg over its devices) is
        recorded too; ``n_train_clips``/``n_validation_clips`` (and ``*_per_device``) say what it trained on."""
        cfg, data, st = self.cfg, self.data, self.state
        train_seconds = self.elapsed()
        selected = cfg.iterations
        if cfg.selection == "best_val" and st.best is not None:
            self.model.load_state_dict(st.best["state_dict"])
            selected = st.best["iteration"]
        scores = predict_scores(self.model, self.test_t, np.arange(len(data.test)), dev=self.dev,
                                batch_size=cfg.eval_batch_size, amp=self.amp, oracle=self.oracle)
        device_pred = scores.device
        preds_df = _predictions_frame(data, scores.scene, device_pred, scores.proba)
        counts = held_out_counts(data.train.device, data.train_idx, data.val_idx, data.device_labels)
        present = [d for d in data.device_labels if counts["train"][d] + counts["validation"][d] > 0]
        val_acc = (validation_accuracy(self.model, data, dev=self.dev, cfg=cfg, oracle=self.oracle)
                   if data.val_idx.size else None)
        n_seen = data.n_seen if data.n_seen is not None else len(data.device_labels)
        evaluation = {
            "cell_id": self.spec.cell_id, "spec": self.spec.to_dict(),
            "scene_labels": data.scene_labels, "device_labels": data.device_labels,
            **evaluate_predictions(preds_df, data.scene_labels, data.device_labels, reference_device=reference_device,
                                   unseen_devices=data.device_labels[n_seen:]),
            "log_loss": log_loss_summary(preds_df, data.scene_labels, data.device_labels,
                                         seen_devices=data.device_labels[:n_seen]),
            "reference_device": reference_device or data.device_labels[0],
            "iterations": cfg.iterations, "train_seconds": round(train_seconds, 3),
            "device_accuracy": float(np.mean(device_pred == data.test.device)) if device_pred is not None else None,
            "fidelity": self.fidelity.name, "selection": cfg.selection, "selected_iteration": selected,
            "bf16_autocast": bool(cfg.amp and self.dev.type == "cuda"),
            "test_device_labels_used": self.oracle,
            "lambda_source": self.rule.source if self.multi else None,
            "lambda_switched_at": self.rule.switched_at if self.multi else None,
            "n_train_clips": int(data.train_idx.size), "n_validation_clips": int(data.val_idx.size),
            "n_train_clips_per_device": {d: counts["train"][d] for d in present},
            "n_validation_clips_per_device": {d: counts["validation"][d] for d in present},
            "n_test": len(data.test), "validation_accuracy": val_acc,
            "validation_history": st.val_history,
            "code_version": code_version,
        }
        evaluation.update(self.unseen_and_lambda_keys(evaluation["per_device"], device_pred))
        notes = []
        if self.oracle and self.spec.device_source == "predicted":
            notes.append(f"unseen-device policy {self.unseen_policy!r}: the true device label of each "
                         "test clip is used to spot the clips of devices absent from training "
                         "(oracle information)")
        elif self.oracle:
            notes.append("teacher forcing: the true device label of each test clip is fed to the model "
                         "(oracle information)")
        if self.spec.method != "none":
            from caanet.methods import evaluation_keys

            keys, note = evaluation_keys(self.spec, self.method_settings, self.transform, cache_attrs or {},
                                         unseen_devices=evaluation["unseen_devices"])
            evaluation.update(keys)
            if note:
                notes.append(note)
                evaluation["test_device_labels_used"] = True
        if notes:
            evaluation["note"] = "; ".join(notes)
        attention = _attention_examples(self.model, data, dev=self.dev, cfg=cfg, oracle=self.oracle, amp=self.amp,
                                        clips=self.test_t)
        return evaluation, preds_df, attention


def train_cell(features_path, spec: CellSpec, cfg: TrainConfig, out_dir, *, threads: int | None = None,
               device="auto", log=None, code_version: str | None = None,
               callback: Callable[[int], None] | None = None, score_validation: bool = False,
               hold_validation: bool = False, reference_device: str | None = None,
               method_settings: dict | None = None, method_cache: str | None = None,
               method_code: str | None = None, still_wanted: Callable[[], bool] | None = None) -> dict:
    """Train and evaluate one table cell; write the contract's outputs into ``out_dir``; return evaluation.json.

    ``threads`` sets torch's intra-op threads (inter-op 1) so a job uses the cores its rule declares.
    ``device``: "auto" (CUDA if available, else CPU) or a torch device. ``log``: a Logger or a
    callable taking a line (plain log lines every ``log_every`` iterations; a tqdm bar when stderr is
    a TTY). ``code_version`` (the workflow's hash of the training code) is recorded in
    ``evaluation.json``; a checkpoint written by other code is discarded (logged) rather than
    resumed, while one of another spec or config is refused. ``callback(iteration)`` is called after
    each completed iteration (a test hook; an exception raised there aborts the job like a kill,
    leaving the last periodic checkpoint). ``score_validation``: hold a validation split out and
    record the accuracy on it (Table I's cells under ``layer_selection: validation``).
    ``hold_validation``: hold the validation split out although this cell does not use it, because
    another cell of its dataset does (the grid's like-for-like rule, :func:`caanet.grid.holds_validation`).
    ``reference_device``: the device left out of ``mean_bc`` (default: the cache's first).
    ``method_settings``: the settings of ``spec.method`` (``methods.<name>`` of the preset, checked by
    :func:`caanet.methods.method_settings`; defaults where absent); ``method_cache``: the derived cache of
    an ``augment`` method (dir_augment). A ``replace`` method's cell (spectrum correction) is given its
    derived cache as ``features_path``; every other cell a plain one (ConfigError otherwise).
    ``method_code``: the workflow's hash of the method's code (its hooks), appended to ``code_version``
    (so a checkpoint written by other method code is discarded too). A fidelity
    that runs float32 (``reference``) turns ``cfg.amp`` off (:func:`effective_config`). Nothing is
    written before the spec, config and cache have been checked. ``still_wanted()`` is asked before
    the outputs, written to a staging folder, are moved into ``out_dir``
    (:func:`caanet.training.outputs.publish_outputs`); a no discards them and raises
    :class:`~caanet.training.outputs.Abandoned`, leaving the end-of-training checkpoint. The cache is
    opened once (:class:`caanet.features.FeatureCache`) and closed before training starts.
    """
    features_path, out_dir = Path(features_path), Path(out_dir)
    say = _as_log(log)
    _check_arguments(spec, cfg)
    from caanet.methods import check_cache_for, method_settings as resolve_method_settings

    settings = resolve_method_settings(spec.method, method_settings, where="method_settings")
    if method_code:
        code_version = f"{code_version}+{method_code}"
    with open_cache(features_path) as cache:  # the job's one open of its cache
        check_spec(cache, spec, cfg)
        check_cache_for(spec, cache.attrs, features_path)
        cfg = effective_config(spec, cfg)
        if score_validation and cfg.val_fraction == 0:
            raise config_error("training.val_fraction", cfg.val_fraction,
                               f"a number > 0: {spec.cell_id}'s layer is selected on a validation split "
                               "(grid.layer_selection: validation)")
        if hold_validation and cfg.val_fraction == 0:
            raise config_error("training.val_fraction", cfg.val_fraction,
                               f"a number > 0: a cell of {spec.dataset} uses a validation split, so every cell "
                               f"of it, {spec.cell_id} included, holds the same clips out")
        if reference_device is not None and reference_device not in cache.device_labels:
            raise ConfigError(f"reference_device={reference_device!r} is not one of the devices {cache.device_labels} "
                              f"of {features_path}")
        dev = _resolve_device(device)
        _set_threads(threads)
        keep_freed_memory()  # no page faults for every step's activations (caanet.runtime)
        data = seen_devices_first(cache, prepare_data(cache, spec, cfg, score_validation=score_validation,
                                                      hold_validation=hold_validation))
        feature_params = cache.params.to_dict()
        params, cache_attrs = cache.params, dict(cache.attrs)
    ck_path = out_dir / "checkpoints" / "last.pt"
    with _determinism(cfg.deterministic, spec.seed), _StopFlag() as stop:
        trainer = CellTrainer(spec, cfg, data, dev, say, method_settings=settings, method_cache=method_cache,
                              feature_params=params)
        trainer.resume(ck_path, code_version)
        say(f"{trainer.name} ({trainer.fidelity.name}): {data.train_idx.size} training clips, {data.val_idx.size} "
            f"validation, {len(data.test)} test; {cfg.iterations} iterations on {dev}")
        say(f"{trainer.name}: " + held_out_line(data))
        trainer.run(ck_path, code_version, stop, callback)
        evaluation, preds_df, attention = trainer.evaluate(code_version, reference_device, cache_attrs)
        evaluation["complexity"] = measure_model(trainer.model, feature_params["clip_seconds"])  # DCASE's counts
        _write_outputs(out_dir, spec=spec, cfg=cfg, model=trainer.model, model_cfg=trainer.model_cfg, data=data,
                       metrics=trainer.state.metrics, evaluation=evaluation, preds_df=preds_df, attention=attention,
                       feature_params=feature_params, still_wanted=still_wanted)
    with contextlib.suppress(FileNotFoundError):
        ck_path.unlink()
    with contextlib.suppress(OSError):
        ck_path.parent.rmdir()
    bc = evaluation["mean_bc"]
    say(f"{trainer.name}: mean_all {evaluation['mean_all']:.4f}, mean_bc {'-' if bc is None else f'{bc:.4f}'}, "
        f"{evaluation['train_seconds']:.1f} s of training")
    return evaluation
