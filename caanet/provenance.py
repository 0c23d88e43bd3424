"""What the outputs depend on: source hashes for rerun-on-code-change, and run provenance.

Snakemake does not follow Python imports, so a change in ``caanet/models`` would not rerun training
on its own. Each rule therefore puts :func:`source_hash` of the modules it depends on into its
``params:``; Snakemake's ``params`` rerun trigger then reruns exactly the jobs whose code changed.

Python files are hashed through their syntax tree (``ast.dump``), so editing a comment or the
formatting reruns nothing, while any change to code or docstrings does. Other files (templates,
CSV) are hashed byte for byte.

Which modules a stage depends on is derived, not listed by hand: :func:`code_hash` follows every
``caanet`` import (module-level and inside functions) from the stage's entry modules, so a module a
stage starts to import is covered the day it is imported (:func:`import_closure`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def _file_digest(path: Path) -> bytes:
    return _parsed(*_stamp(path))[0]


def _stamp(path: Path) -> tuple[str, int, int]:
    """``(path, size, mtime_ns)``: the key under which a file's parse is cached in this process."""
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _parsed(path: str, size: int, mtime_ns: int) -> tuple[bytes, ast.AST | None]:
    """``(digest, syntax tree or None)`` of a file, parsed once per process and version of the file (a
    Snakefile parse hashes every stage's modules, and each stage shares most of them). Python files are
    digested through their syntax tree (comments and formatting do not count)."""
    data = Path(path).read_bytes()
    tree = None
    if path.endswith(".py"):
        try:
            tree = ast.parse(data, filename=path)
            data = ast.dump(tree, include_attributes=False).encode()
        except SyntaxError:
            pass  # hash the bytes; the import will fail loudly anyway
    return hashlib.sha256(data).digest(), tree


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


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of module ``name`` (``caanet.x.y``) under the package ``root``, or None."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every ``caanet`` module that the file ``path`` (module ``module``) imports, anywhere in it, with
    the packages each import runs (``caanet.a.b`` runs ``caanet`` and ``caanet.a`` too)."""
    tree = _parsed(*_stamp(path))[1]
    if tree is None:
        tree = ast.parse(path.read_bytes(), filename=str(path))  # a syntax error, raised here
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "caanet")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "caanet":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from caanet import models`
    closed = set()
    for name in found:
        parts = name.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return closed


def import_closure(*modules: str, root: str | Path = PACKAGE_ROOT) -> list[Path]:
    """The source files of ``modules`` (``"caanet.training"``, ...) and of every ``caanet`` module they
    import, transitively, sorted. Names that are not modules (``from caanet.x import function``) are
    skipped. Raises FileNotFoundError for an entry module that does not exist."""
    root = Path(root)
    seen: dict[str, Path] = {}
    todo = list(modules)
    for name in modules:
        if _module_file(name, root) is None:
            raise FileNotFoundError(f"import_closure: no module {name!r} under {root}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        f = _module_file(name, root)
        if f is None:
            continue
        seen[name] = f
        todo.extend(_imported_modules(f, name) - seen.keys())
    return sorted(set(seen.values()))


def code_hash(*modules: str, data: tuple[str, ...] = (), root: str | Path = PACKAGE_ROOT, length: int = 12) -> str:
    """:func:`source_hash` of the :func:`import_closure` of ``modules`` plus the ``data`` files or folders
    (relative to ``root``: templates, CSVs) that the code reads."""
    root = Path(root)
    rel = [str(p.relative_to(root)) for p in import_closure(*modules, root=root)]
    return source_hash(*rel, *data, root=root, length=length)


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
