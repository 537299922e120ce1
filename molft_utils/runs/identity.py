"""A run's identity: its notebook's source, the package code it can execute, its parameters' defaults.

:func:`notebook_code_modules` reads a notebook's imports of the package statically (``ast``) and follows them
through the package, lazy top-level names of ``molft_utils/__init__.py`` included; :func:`code_hash` hashes those
files, so an edit elsewhere in the package leaves the notebook's results current. :mod:`molft_utils.runs.batch`
(the rerun rule) and the Snakemake workflow build every run's identity from these functions.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import nbformat

__all__ = [
    "ORCHESTRATION_MODULES",
    "PACKAGE_DIR",
    "PACKAGE_NAME",
    "code_hash",
    "identity_change",
    "notebook_code_modules",
    "notebook_defaults",
    "notebook_source_hash",
    "recorded_state",
]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The import name of the package (whatever folder :data:`PACKAGE_DIR` points to).
PACKAGE_NAME = (__package__ or __name__).split(".")[0]  # `python -m` runs this module as __main__
#: Modules that only orchestrate runs (never imported by a notebook), as paths relative to :data:`PACKAGE_DIR`;
#: they do not count in :func:`code_hash`.
ORCHESTRATION_MODULES = ("runs/batch.py", "runs/cache_jobs.py", "runs/identity.py")
#: The batch runner's record of a run (its identity and wall time), beside the run's ``result.json``.
BATCH_FILE = "batch.json"



def notebook_source_hash(path: Path) -> str:
    """Hash of the cell types and sources (outputs and metadata do not count)."""
    nb = nbformat.read(path, as_version=4)
    text = json.dumps([(c.cell_type, c.source) for c in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_hash(package: Path | None = None, files: Sequence[Path] | None = None) -> str:
    """Hash of package source files, by path (relative to the package) and content.

    ``files`` are the files to hash (e.g. :func:`notebook_code_modules` of one notebook); by default every
    ``**/*.py`` of ``package`` except :data:`ORCHESTRATION_MODULES`. ``package`` defaults to
    :data:`PACKAGE_DIR` (this ``molft_utils``, all its subpackages).
    """
    digest = hashlib.sha256()
    root = Path(package or PACKAGE_DIR)
    chosen = sorted(root.rglob("*.py")) if files is None else sorted(Path(f) for f in files)
    for path in chosen:
        rel = path.relative_to(root).as_posix()
        if rel in ORCHESTRATION_MODULES or "__pycache__" in path.parts:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _package_maps(root: Path) -> dict[str, str]:
    """Top-level name → dotted module (relative to the package) from the package's lazy ``MODULES`` / ``NAMES``."""
    tree = ast.parse((root / "__init__.py").read_text())
    maps: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if names & {"MODULES", "NAMES"} and node.value is not None:
                maps |= ast.literal_eval(node.value)
    return maps


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of ``molft_utils.<dotted>`` (a module or a subpackage's ``__init__.py``), or None."""
    base = root.joinpath(*dotted.split(".")) if dotted else root
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, root: Path, maps: dict[str, str], here: str = "") -> set[str]:
    """Dotted package-relative modules that ``tree`` imports from the package (``""`` is the package itself).

    ``here`` is the importing module's own package (for relative imports).
    """
    pkg = PACKAGE_NAME
    found: set[str] = set()

    def add(dotted: str, names: Sequence[str] = ()) -> None:
        found.add(dotted)
        for name in names:  # `from pkg.x import y`: y may be a submodule, a name of x, or a lazy top-level name
            sub = f"{dotted}.{name}" if dotted else name
            if _module_file(root, sub) is not None:
                found.add(sub)
            elif not dotted and name in maps:
                found.add(maps[name])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == pkg or alias.name.startswith(pkg + "."):
                    add(alias.name[len(pkg) + 1 :])
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                parts = here.split(".") if here else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                add(".".join(p for p in [*parts, node.module or ""] if p), names)
            elif node.module and (node.module == pkg or node.module.startswith(pkg + ".")):
                add(node.module[len(pkg) + 1 :], names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == pkg:
            if node.attr in maps:  # `molft_utils.finetune` after `import molft_utils`
                found.add(maps[node.attr])
    return found


def notebook_code_modules(path: Path, package: Path | None = None) -> list[Path] | None:
    """The package's source files a notebook can execute: its imports of the package, followed transitively.

    Returns the files (each with its parent packages' ``__init__.py``), sorted, or None when a code cell cannot
    be parsed (the caller then hashes the whole package). Imports are read statically (``ast``), including the
    ones inside functions and the lazy top-level names of ``molft_utils/__init__.py``.
    """
    root = Path(package or PACKAGE_DIR)
    maps = _package_maps(root)
    nb = nbformat.read(path, as_version=4)
    pending: set[str] = {""}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        # IPython magics and shell escapes are not Python; they import nothing from the package
        text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        try:
            pending |= _imported_modules(ast.parse(text), root, maps)
        except SyntaxError:
            return None
    seen: dict[str, Path] = {}
    while pending:
        dotted = pending.pop()
        parts = dotted.split(".") if dotted else []
        parents = {".".join(parts[:i]) for i in range(len(parts))}  # importing a.b.c runs a/ and a/b/__init__.py
        pending |= parents - set(seen)
        file = _module_file(root, dotted)
        if file is None or dotted in seen:
            continue
        seen[dotted] = file
        here = dotted if file.name == "__init__.py" else ".".join(parts[:-1])
        pending |= _imported_modules(ast.parse(file.read_text()), root, maps, here) - set(seen)
    return sorted(seen.values())


def notebook_defaults(path: Path) -> dict[str, object]:
    """The parameters a notebook declares, with their defaults (from its ``parameters`` cell).

    A default that is not a Python literal is kept as its source text.
    """
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    defaults: dict[str, object] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                defaults[node.targets[0].id] = ast.unparse(node.value)
    return defaults


def recorded_state(result_dir: Path, notebooks: Path, package: Path | None = None) -> str:
    """Whether the run that wrote ``result_dir/result.json`` still describes the notebook and code of today.

    Reads the identity the batch runner stored in ``result_dir/batch.json`` and compares its notebook source
    hash and code hash with those of ``notebooks/<notebook>`` now (parameters are the run's own and do not
    count). Returns ``"current"``, ``"stale (notebook changed)"``, ``"stale (code changed)"``,
    ``"stale (notebook missing)"`` or ``"not recorded"`` (no batch record, e.g. a notebook run by hand).
    """
    try:
        record = json.loads((Path(result_dir) / BATCH_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "not recorded"
    identity = record.get("identity") if isinstance(record, dict) else None
    if not isinstance(identity, dict) or "notebook" not in identity:
        return "stale (code changed)"  # a record from before identities were stored: its hash ignored the code
    nb = Path(notebooks) / identity["notebook"]
    if not nb.is_file():
        return "stale (notebook missing)"
    now = {"notebook": nb.name, "notebook_hash": notebook_source_hash(nb),
           "code_hash": code_hash(package, files=notebook_code_modules(nb, package))}
    change = identity_change(identity, now)
    return "current" if change is None else f"stale ({change})"


def identity_change(old: dict, new: dict) -> str | None:
    """``"notebook changed"`` or ``"code changed"`` between two run identities, or None when both agree
    (parameters are not compared: the caller decides whether they count)."""
    if old.get("notebook") != new["notebook"] or old.get("notebook_hash") != new["notebook_hash"]:
        return "notebook changed"
    if old.get("code_hash") != new["code_hash"]:
        return "code changed"
    return None
