"""Which code each stage depends on is derived from its imports (caanet.provenance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caanet.provenance import PACKAGE_ROOT, code_hash, import_closure


def _package(tmp_path: Path) -> Path:
    """A toy ``caanet`` package: entry imports b at module level, c inside a function, d relatively,
    the subpackage sub through ``from caanet import sub``; ``unused`` is imported by nobody."""
    root = tmp_path / "caanet"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "entry.py": "import os\nfrom caanet.b import thing\n\ndef f():\n    import caanet.c\n    from . import d\n"
                    "    from caanet import sub\n",
        "b.py": "thing = 1\n",
        "c.py": "from caanet.sub.leaf import x\n",
        "d.py": "",
        "unused.py": "",
        "sub/__init__.py": "",
        "sub/leaf.py": "x = 2\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_import_closure_follows_module_level_lazy_relative_and_package_imports(tmp_path):
    root = _package(tmp_path)
    got = sorted(str(p.relative_to(root)) for p in import_closure("caanet.entry", root=root))
    assert got == ["__init__.py", "b.py", "c.py", "d.py", "entry.py", "sub/__init__.py", "sub/leaf.py"]


def test_code_hash_changes_with_an_imported_module_only(tmp_path):
    root = _package(tmp_path)
    before = code_hash("caanet.entry", root=root)
    (root / "unused.py").write_text("y = 3\n")
    assert code_hash("caanet.entry", root=root) == before
    (root / "sub" / "leaf.py").write_text("# a comment only\nx = 2\n")
    assert code_hash("caanet.entry", root=root) == before
    (root / "sub" / "leaf.py").write_text("x = 3\n")
    assert code_hash("caanet.entry", root=root) != before


def test_import_closure_names_a_missing_entry_module(tmp_path):
    with pytest.raises(FileNotFoundError, match="caanet.nothing"):
        import_closure("caanet.nothing", root=_package(tmp_path))


def test_training_depends_on_everything_it_imports_and_not_on_statistics():
    """The training hash covers the data loader and the device policy (which a hand-kept list
    missed) and leaves statistics and rendering out, so a stats change retrains nothing."""
    from caanet.training import ENTRY_MODULES

    files = {str(p.relative_to(PACKAGE_ROOT)) for p in import_closure(*ENTRY_MODULES)}
    assert {"training/__init__.py", "training/config.py", "training/trainer.py", "training/checkpoint.py",
            "training/outputs.py", "training/batches.py", "training/process.py", "data/loader.py", "features.py", "devices.py", "models/heads.py", "modelfile.py", "fidelity.py"} <= files
    assert not {"stats.py", "grid.py", "aggregate.py"} & files and not any(f.startswith("render/") for f in files)
