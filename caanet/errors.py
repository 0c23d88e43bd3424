"""Exceptions raised for bad input. Each message names the file, row, key or value at fault."""


class CaanetError(Exception):
    """Base class of every error caanet raises on purpose."""


class ConfigError(CaanetError, ValueError):
    """A configuration key or value is wrong (the message names the key)."""


class DatasetError(CaanetError):
    """A dataset folder, meta file or split file is malformed (names the file and row)."""


class DownloadError(CaanetError):
    """A download failed, or an archive is corrupt, truncated or unsafe (names the file)."""


class AudioError(CaanetError):
    """An audio file cannot be read or has unusable content (names the file)."""


class CacheError(CaanetError):
    """A feature cache is missing, incomplete or inconsistent (names the file and key)."""


class HDF5LockError(CacheError):
    """HDF5 cannot lock a file on this file system (NFS without lockd, some cluster scratch mounts);
    names the file and ``HDF5_USE_FILE_LOCKING=FALSE`` (caanet.io.open_hdf5)."""


class SpecError(CaanetError, ValueError):
    """A table-cell specification names an unknown topology, pooling, strategy or layer."""


class TrainingError(CaanetError):
    """Training cannot go on (e.g. a non-finite loss; names the iteration)."""


class ResultsError(CaanetError):
    """A result file of a finished cell (evaluation.json, predictions.csv) is missing a key or
    disagrees with another one it is compared with (names the file, cell and key)."""

def config_error(key: str, value, expected: str, error: type[CaanetError] = ConfigError) -> CaanetError:
    """The one form of every configuration error: the key path, the value, what was expected.

    ``config_error("training.lr", -1, "a number > 0")`` gives
    ``config key 'training.lr': got -1; expected a number > 0``. Returned, not raised, so that
    callers write ``raise config_error(...)`` and tracebacks point at them.
    """
    return error(f"config key {key!r}: got {value!r}; expected {expected}")


def reject_unknown_keys(keys, known, where: str, error: type[CaanetError] = ConfigError) -> None:
    """Raise ``error`` naming every key of ``keys`` that is not in ``known`` by its full key path
    (``where.key``), in :func:`config_error`'s form, one line per unknown key. ``keys``: a mapping
    (its values are reported) or an iterable of names."""
    unknown = sorted(set(keys) - set(known), key=str)
    if unknown:
        lines = [str(config_error(f"{where}.{k}" if where else str(k),
                                  keys[k] if hasattr(keys, "keys") else k,
                                  f"a known key (one of {sorted(known)})")) for k in unknown]
        raise error("\n".join(lines))
