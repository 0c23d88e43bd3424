"""Seen and unseen recording devices, and what a conditioned model gets for an unseen one.

Beyond the paper (whose three devices all appear in training): DCASE 2020 Task 1A's development set
has devices that appear only in the test fold (s4, s5, s6), and the 2020-style embedded datasets
copy that. Definitions used throughout (``docs/design.md``, "Seen and unseen devices"):

* a **seen** device has at least one clip in the cache's ``train`` split (whatever a cell then
  selects or holds out for validation); an **unseen** device has test clips but no training clip;
* a conditioned model's device vocabulary is the seen devices only: Eq. 1's ``V_i`` has one column
  per seen device, CNN-d one output per seen device. (A column for an unseen device would never be
  trained: feeding it would be feeding random initial weights.)
* the cell's device labels are ordered seen devices first (each group in the cache's order), so a
  device index ``>= n_seen`` means "unseen" to the model (:func:`seen_first_order`).

**The unseen-device policy** (``training.unseen_device``), per conditional strategy; it decides the
conditioning input ``c`` of a test clip recorded by an unseen device, Eq. 1's term being
``V c + b`` (``V`` the 1x1 convolution's weights, ``b`` its bias, ``S`` the number of seen devices):

``zero``
    ``c = 0``: the term is the bias ``b`` alone, "no device". Teacher forcing: applied to the clips
    whose (true, test) device is unseen; the true one-hot of seen devices as before. Multi-task:
    CNN-d's argmax for clips of seen devices; the test label is used only to spot unseen clips,
    which get ``c = 0`` (oracle information: ``evaluation.json`` says ``test_device_labels_used``).
``uniform``
    ``c = (1/S, ..., 1/S)``: the term is the mean of the seen devices' terms. Otherwise as ``zero``.
``predicted``
    Multi-task only: CNN-d's argmax over the seen devices for every test clip, unseen or not, with no
    test label used: the paper's mechanism unchanged, so an unseen device is conditioned as the seen
    device CNN-d takes it for. Refused for teacher forcing, which has no device classifier.

Single-device and joint cells have no conditioning: the policy does not apply (a single-device cell
of an unseen device is refused, having no training clip).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from caanet.errors import ConfigError, DatasetError, config_error, reject_unknown_keys
from caanet.vocab import STRATEGY_REGISTRY, UNSEEN_DEVICE_POLICIES

# training.unseen_device's keys: the conditional strategies' families (multi_task covers both
# multi-task strategies, the switched and the learned lambda) and the default policy of each.
UNSEEN_POLICY_KEYS = ("teacher_forcing", "multi_task")
DEFAULT_UNSEEN_POLICY = {"teacher_forcing": "uniform", "multi_task": "predicted"}
# derived from the strategy registry: oracle-conditioned strategies follow teacher_forcing's policy,
# the CNN-d-conditioned ones multi_task's
_POLICY_KEY_OF_STRATEGY = {s.name: "teacher_forcing" if s.device_source == "oracle" else "multi_task"
                           for s in STRATEGY_REGISTRY if s.conditional}


def normalise_unseen_policy(value, where: str = "training.unseen_device") -> dict[str, str]:
    """``training.unseen_device`` as a full mapping ``{teacher_forcing: ..., multi_task: ...}``.

    ``value``: a policy name (:data:`caanet.spec.UNSEEN_DEVICE_POLICIES`) applying to both families,
    or a mapping giving some of them (the others keep :data:`DEFAULT_UNSEEN_POLICY`), or None (the
    defaults). Raises ConfigError naming ``where`` for an unknown key or policy, and for
    ``predicted`` under teacher forcing (no device classifier to predict with).
    """
    if value is None:
        return dict(DEFAULT_UNSEEN_POLICY)
    if isinstance(value, str):
        if value not in UNSEEN_DEVICE_POLICIES:
            raise config_error(where, value, f"one of {list(UNSEEN_DEVICE_POLICIES)}")
        if value == "predicted":
            raise config_error(
                where, value, "a mapping such as {teacher_forcing: uniform, multi_task: predicted} ('predicted' for "
                "every strategy is impossible: teacher forcing has no device classifier, CNN-d, to predict with)")
        value = {key: value for key in UNSEEN_POLICY_KEYS}
    if not isinstance(value, Mapping):
        raise config_error(where, value, f"a policy name or a mapping {list(UNSEEN_POLICY_KEYS)} -> policy")
    reject_unknown_keys(value, UNSEEN_POLICY_KEYS, where)
    out = dict(DEFAULT_UNSEEN_POLICY)
    for key, policy in value.items():
        if policy not in UNSEEN_DEVICE_POLICIES:
            raise config_error(f"{where}.{key}", policy, f"one of {list(UNSEEN_DEVICE_POLICIES)}")
        out[key] = policy
    if out["teacher_forcing"] == "predicted":
        raise config_error(f"{where}.teacher_forcing", "predicted",
                           "'zero' or 'uniform' ('predicted' needs a device classifier, CNN-d, which teacher forcing has not)")
    return out


def unseen_policy_for(policies: Mapping[str, str], strategy: str) -> str | None:
    """The policy of one cell's ``strategy`` (None for unconditioned strategies)."""
    key = _POLICY_KEY_OF_STRATEGY.get(strategy)
    return None if key is None else normalise_unseen_policy(dict(policies))[key]


def seen_devices(device_labels: Sequence[str], train_devices: Sequence[str]) -> list[str]:
    """The labels of ``device_labels`` (in that order) that occur in ``train_devices``.

    ``train_devices`` holds the device label of every clip of the dataset's training split. A label
    occurring there but absent from ``device_labels`` raises ConfigError.
    """
    present = set(np.asarray(train_devices).astype(str).tolist())
    stray = sorted(present - set(device_labels))
    if stray:
        raise ConfigError(f"training clips of device(s) {stray} not in the device labels {list(device_labels)}")
    return [d for d in device_labels if d in present]


def check_unseen_devices(index, declared: Sequence[str], where: str) -> list[str]:
    """Check a clip index (``caanet.data.layout.read_dataset``'s frame) against the declared unseen devices.

    Every device with test clips but no training clip must be declared (``datasets.<name>.unseen_devices``)
    and every declared one must have test clips and no training clip. Returns the seen devices (sorted);
    raises DatasetError naming ``where`` and the device.
    """
    train = set(index.loc[index["split"] == "train", "device"])
    test = set(index.loc[index["split"] == "test", "device"])
    for device in declared:
        if device in train:
            n = int(((index["device"] == device) & (index["split"] == "train")).sum())
            raise DatasetError(f"{where}: device {device!r} is declared unseen but has {n} training clips")
        if device not in test:
            raise DatasetError(f"{where}: device {device!r} is declared unseen but has no test clips")
    undeclared = sorted(test - train - set(declared))
    if undeclared:
        raise DatasetError(f"{where}: device(s) {undeclared} have test clips but no training clip; declare them "
                           "in the dataset's unseen_devices (config.yaml) if that is intended")
    return sorted(train)


def seen_first_order(device_labels: Sequence[str], seen: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(new_labels, old_to_new)``: seen devices first, then the unseen ones, each in the given order.

    ``old_to_new[i]`` is the new index of ``device_labels[i]``, so ``old_to_new[device]`` relabels an
    index array. For the DCASE data (``a, b, c, s1..s6``, seen ones first already) nothing moves.
    """
    labels = list(device_labels)
    missing = [d for d in seen if d not in labels]
    if missing:
        raise ConfigError(f"seen device(s) {missing} not in the device labels {labels}")
    new = [d for d in labels if d in set(seen)] + [d for d in labels if d not in set(seen)]
    position = {d: i for i, d in enumerate(new)}
    return new, np.array([position[d] for d in labels], dtype=np.int64)


def seen_unseen_summary(per_device: Mapping[str, Mapping], seen: Sequence[str]) -> dict:
    """Seen/unseen means of ``evaluation.json``'s ``per_device`` (the paper's metric per device).

    Returns ``seen_devices`` and ``unseen_devices`` (the evaluated devices of each kind, in
    ``per_device`` order) and ``mean_seen`` / ``mean_unseen``: the unweighted mean of those
    devices' accuracies, each device counting once like the paper's "Avg" (None where there is no
    such device).
    """
    seen = set(seen)
    groups = {"seen": [d for d in per_device if d in seen], "unseen": [d for d in per_device if d not in seen]}

    def mean(devs):
        accs = [per_device[d]["accuracy"] for d in devs if per_device[d]["accuracy"] is not None]
        return float(np.mean(accs)) if accs else None

    return {"seen_devices": groups["seen"], "unseen_devices": groups["unseen"],
            "mean_seen": mean(groups["seen"]), "mean_unseen": mean(groups["unseen"])}
