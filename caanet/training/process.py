"""The process a training job runs in: torch device, threads, determinism, signals, the log.

Module-level state of torch (deterministic kernels, cuDNN autotuning) is set for the job and restored
after it (:func:`_determinism`); SIGTERM/SIGINT become a flag checked once per iteration (:class:`_StopFlag`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Callable

import numpy as np
import torch

from caanet.errors import ConfigError

LOGGER = logging.getLogger("caanet.training")


def _as_log(log) -> Callable[[str], None]:
    if log is None:
        return LOGGER.info
    if isinstance(log, logging.Logger):
        return log.info
    if callable(log):
        return log
    raise ConfigError(f"log must be a logging.Logger or a callable, got {type(log).__name__}")


def _resolve_device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available on this machine")
    return dev


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be an integer >= 1")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first inter-op parallel work
        torch.set_num_interop_threads(1)


def _use_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor`` (1.2 s per job).

    The public function also sets ``torch._inductor.config.deterministic``, which matters only to
    code compiled by inductor: it is set here too when inductor is already loaded, and nothing here
    compiles otherwise.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public function
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = mode


@contextlib.contextmanager
def _determinism(enabled: bool, seed: int):
    """Seed torch/numpy and (if enabled) ask for deterministic kernels; restore the global flags after."""
    fill = getattr(torch.utils, "deterministic", None)
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, getattr(fill, "fill_uninitialized_memory", None))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode would also fill every new tensor with NaN (a debugging aid against reads of
        # uninitialised memory, ~3 % of a small network's step); the kernels used here never read it
        if fill is not None:
            fill.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    else:  # cuDNN times the candidate algorithms once per shape and keeps the fastest (not bit-reproducible)
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        _use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        if fill is not None and prev[3] is not None:
            fill.fill_uninitialized_memory = prev[3]


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag checked once per iteration (installed in the main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
