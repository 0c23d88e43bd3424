"""What the outputs depend on: source hashes for rerun-on-code-change, and run provenance.

Snakemake does not follow Python imports, so a change in ``caanet/models`` would not rerun training
on its own. Each rule therefore puts :func:`source_hash` of the modules it depends on into its
``params:``; Snakemake's ``params`` rerun trigger then reruns exactly the jobs whose code changed.

Python files are hashed through their syntax tree (``ast.dump``), so editing a comment or the
formatting reruns nothing, while any change to code or docstrings does. Other files (templates,
CSV) are hashed byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def _file_digest(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".py":
        try:
            data = ast.dump(ast.parse(data, filename=str(path)), include_attributes=False).encode()
        except SyntaxError:
            pass  # hash the bytes; the import will fail loudly anyway
    return hashlib.sha256(data).digest()


def source_hash(*relpaths: str, root: str | Path = PACKAGE_ROOT, length: int = 12) -> str:
    """Hash the named files or folders (relative to ``root``; folders recursively, sorted)."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in relpaths:
        target = root / rel
        if target.is_dir():
            files = sorted(p for p in target.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif target.is_file():
            files = [target]
        else:
            raise FileNotFoundError(f"source_hash: {target} does not exist")
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(_file_digest(f))
    return h.hexdigest()[:length]


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def software_versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("caanet", "torch", "numpy", "scipy", "librosa", "soxr", "h5py", "pandas", "snakemake", "matplotlib", "jinja2"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
