"""Which package files a notebook's run identity covers (:func:`molft_utils.runs.identity.notebook_code_modules`)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from molft_utils.runs import batch, identity

INIT = '''
MODULES = {"train": "training.train", "plots": "runs.plots"}
NAMES = {"fit": "training.train"}
'''


def _package(root: Path) -> Path:
    pkg = root / "molft_utils"
    files = {
        "__init__.py": INIT,
        "core/__init__.py": "",
        "core/settings.py": "X = 1\n",
        "training/__init__.py": "",
        "training/train.py": "from molft_utils.core.settings import X\n\ndef fit():\n    from . import metrics\n",
        "training/metrics.py": "from ..core import settings\n",
        "runs/__init__.py": "",
        "runs/plots.py": "import molft_utils.training.train\n",
        "methods/__init__.py": "",
        "methods/unused.py": "from molft_utils.runs import plots\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def _notebook(path: Path, *cells: str) -> Path:
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("from molft_utils import plots  (prose, not code)")]
    nb.cells += [v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def _rel(files: list[Path] | None, pkg: Path) -> list[str]:
    assert files is not None
    return sorted(f.relative_to(pkg).as_posix() for f in files)


def test_closure_follows_lazy_names_relative_and_function_imports(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    nb = _notebook(tmp_path / "01.ipynb", "%matplotlib inline\n!echo hi\nfrom molft_utils import fit")
    assert _rel(identity.notebook_code_modules(nb, pkg), pkg) == [
        "__init__.py", "core/__init__.py", "core/settings.py",
        "training/__init__.py", "training/metrics.py", "training/train.py",
    ]  # fmt: skip


def test_attribute_access_and_submodule_imports_count(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    nb = _notebook(tmp_path / "02.ipynb", "import molft_utils\nmolft_utils.plots")
    assert "runs/plots.py" in _rel(identity.notebook_code_modules(nb, pkg), pkg)
    nb = _notebook(tmp_path / "03.ipynb", "from molft_utils.runs import plots")
    files = _rel(identity.notebook_code_modules(nb, pkg), pkg)
    assert {"runs/__init__.py", "runs/plots.py", "training/train.py"} <= set(files)
    assert "methods/unused.py" not in files


def test_hash_changes_only_with_the_code_a_notebook_runs(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    nb = _notebook(tmp_path / "01.ipynb", "from molft_utils import fit")
    before = identity.code_hash(pkg, identity.notebook_code_modules(nb, pkg))
    (pkg / "methods" / "unused.py").write_text("# edited\n")
    assert identity.code_hash(pkg, identity.notebook_code_modules(nb, pkg)) == before
    (pkg / "training" / "metrics.py").write_text("from ..core import settings\n# edited\n")
    assert identity.code_hash(pkg, identity.notebook_code_modules(nb, pkg)) != before


def test_unparsable_cell_means_the_whole_package(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    nb = _notebook(tmp_path / "01.ipynb", "def broken(:\n    pass")
    assert identity.notebook_code_modules(nb, pkg) is None
    assert identity.code_hash(pkg, None) == identity.code_hash(pkg)


def test_every_lesson_covers_its_own_method_modules() -> None:
    notebooks = batch.discover_notebooks()
    files = {nb.stem[:2]: _rel(identity.notebook_code_modules(nb), identity.PACKAGE_DIR) for nb in notebooks}
    assert "training/train.py" in files["01"] and "runs/finetune.py" in files["01"]
    assert any(f.startswith("methods/influence/") for f in files["02"])
    assert any(f.startswith("methods/peft_methods/") for f in files["04"])
    assert not any(f.startswith("methods/peft_methods/") for f in files["01"])
    assert any(f.startswith("methods/robust/") for f in files["05"])


def test_cache_keys_carry_the_logic_of_the_code_that_builds_them() -> None:
    from molft_utils.runs.finetune import code_version
    from molft_utils.runs.identity import module_code_modules, module_logic_hash

    files = {p.relative_to(p.parents[1]).as_posix() for p in module_code_modules("runs.finetune")}
    assert {"runs/finetune.py", "training/train.py", "training/mlm.py", "runs/identity.py"} <= files
    assert "runs/report.py" not in files  # only what the module imports
    from molft_utils.core.device import get_device

    key = code_version("no")  # "no": full precision on any device
    assert key == {"code_version": module_logic_hash("runs.finetune"), "device": get_device().type, "autocast": "None"}
    assert code_version("no", "runs.influence_runs")["code_version"] != key["code_version"]
    with pytest.raises(ValueError, match="no such module"):
        module_code_modules("runs.nothing_here")
