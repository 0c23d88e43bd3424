"""Records the files a Snakemake script job opens for reading (tests/test_workflow.py).

Put this folder on PYTHONPATH and set CAANET_OPEN_AUDIT to a folder: every Python process that runs
a Snakemake ``script:`` (it has a ``snakemake`` object in ``__main__``) writes, at exit, one JSON file
there with its rule, declared inputs, outputs and logs, and every path it opened for reading through
Python (``open``, ``io``, ``os.open``: pandas, json, numpy, torch; not C libraries such as HDF5 or
libsndfile). Without CAANET_OPEN_AUDIT it does nothing.
"""

import os

_DIR = os.environ.get("CAANET_OPEN_AUDIT")

if _DIR:
    import atexit
    import json
    import sys

    _reads = []
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event != "open":
            return
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return   # a file descriptor
        if mode is not None:
            if any(c in str(mode) for c in "wax+"):
                return
        elif flags is not None and flags & _WRITE_FLAGS:
            return
        _reads.append(path)

    def _report():
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        if job is None or not hasattr(job, "rule") or not hasattr(job, "input"):
            return
        cwd = os.getcwd()
        reads = sorted({os.path.relpath(os.path.abspath(p), cwd) for p in _reads})
        record = {"rule": job.rule, "input": [str(p) for p in job.input], "output": [str(p) for p in job.output],
                  "log": [str(p) for p in job.log], "reads": reads}
        os.makedirs(_DIR, exist_ok=True)
        with open(os.path.join(_DIR, f"{job.rule}-{os.getpid()}.json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh)

    sys.addaudithook(_hook)
    atexit.register(_report)
