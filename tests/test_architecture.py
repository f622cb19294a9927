"""The layout's rules, checked by import-linter (contracts in pyproject.toml: layers, independent
families, torch-free runtime and family top levels, no import cycles) and by a few checks of the
tree itself that a contract cannot state."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sdk" / "genmask_sdk"
FAMILIES = PACKAGE / "families"
#: the folders every family has (torch-using ones: modeling, export, train; eval runs the model)
FAMILY_FOLDERS = {"modeling", "export", "train", "eval"}
#: the torch-free modules every family has at its top level
FAMILY_MODULES = {"__init__.py", "config.py", "checkpoints.py", "segmenter.py", "engines.py", "pipeline.py"}


def _family_dirs() -> list[Path]:
    return sorted(p for p in FAMILIES.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (it is in the 'dev' extra)")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_family_folder_has_the_same_shape():
    families = _family_dirs()
    assert {p.name for p in families} == {"genmask", "gen2seg"}
    for family in families:
        folders = {p.name for p in family.iterdir() if p.is_dir() and p.name != "__pycache__"}
        modules = {p.name for p in family.glob("*.py")}
        assert FAMILY_FOLDERS <= folders, f"{family.name} lacks {FAMILY_FOLDERS - folders}"
        assert FAMILY_MODULES <= modules, f"{family.name} lacks {FAMILY_MODULES - modules}"


def test_every_family_top_level_module_is_under_the_torch_free_contract():
    """A new top-level module of a family is checked as soon as it exists (or this names it)."""
    contract = next(c for c in _contracts() if "top-level" in c["name"])
    sources = set(contract["source_modules"])
    for family in _family_dirs():
        for module in family.glob("*.py"):
            if module.name == "__init__.py":
                continue
            name = f"genmask_sdk.families.{family.name}.{module.stem}"
            assert name in sources, f"add {name} to the torch-free contract in pyproject.toml"


def test_at_most_four_modules_loose_at_the_package_top():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= 4, loose


def test_the_registry_names_every_family_folder():
    from genmask_sdk.families.registry import REGISTRY, load_attribute

    assert sorted(REGISTRY) == sorted(p.name for p in _family_dirs())
    for entry in REGISTRY.values():
        assert entry.segmenter.startswith(f"families.{entry.name}.") and entry.build.startswith(f"families.{entry.name}.")
        assert load_attribute(entry.segmenter).FAMILY == entry.name


def test_the_shared_layers_name_no_family_in_their_imports():
    """What the layers contract checks, restated on the source text (lazy imports included)."""
    for layer in ("runtime", "export", "data", "metrics"):
        for path in (PACKAGE / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.startswith("genmask_sdk.families"), f"{path}: imports {node.module}"
