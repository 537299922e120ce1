"""A run's identity: its notebook's source, the package code it can execute, its parameters' defaults.

:func:`notebook_code_modules` reads a notebook's imports of the package statically (``ast``) and follows them
through the package, lazy top-level names of ``molft_utils/__init__.py`` included; :func:`code_hash` hashes those
files, so an edit elsewhere in the package leaves the notebook's results current. :mod:`molft_utils.runs.batch`
(the rerun rule) and the Snakemake workflow build every run's identity from these functions.

Two kinds of hash describe the same sources:

* the **text** hashes (:func:`notebook_source_hash`, :func:`code_hash`) change with any byte: Markdown, comments,
  docstrings, formatting;
* the **logic** hashes (:func:`notebook_logic_hash`, :func:`code_logic_hash`) hash what Python executes: the
  syntax tree of each code cell and module (:func:`logic_source`), without docstrings; Markdown cells, comments
  and formatting never reach it.

A run is stale when the logic it ran differs from today's (:func:`identity_change`): an edit of a Discussion, a
comment or a docstring changes no number, so it does not cost a rerun that can take hours. The batch runner
then refreshes the executed notebook's text instead (:func:`molft_utils.runs.batch.refresh_text`), so a reader
never sees outdated prose beside the numbers. Records written before logic hashes existed carry text hashes
only; they count as current while the text is identical (the same bytes run the same logic), and the batch
runner adds the logic hashes to them (:func:`molft_utils.runs.batch.upgrade_record`).

Notebook cells are hashed as the kernel runs them (:func:`cell_logic_source`: IPython turns magics into calls
where they stand). A notebook that prints package source (``inspect.getsource``, lesson 05) shows comments and
docstrings as output, so its package code counts by its text. Docstrings read at run time (``__doc__``) only
feed command-line help here. The logic hashing has a version (:data:`LOGIC_VERSION`): records of another version
count by their text hashes until upgraded. Python versions agree on the hashes of this code (checked on
3.10-3.13); syntax one version cannot parse counts by its text there, which can only cause a rerun.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat

__all__ = [
    "LOGIC_KEYS",
    "LOGIC_VERSION",
    "ORCHESTRATION_MODULES",
    "PACKAGE_DIR",
    "PACKAGE_NAME",
    "cell_logic_source",
    "code_hash",
    "code_logic_hash",
    "has_logic_hashes",
    "identity_change",
    "logic_identity",
    "logic_source",
    "module_code_modules",
    "module_logic_hash",
    "notebook_code_modules",
    "notebook_defaults",
    "notebook_identity",
    "notebook_logic_hash",
    "notebook_source_hash",
    "recorded_state",
    "source_hash",
    "text_change",
]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The import name of the package (whatever folder :data:`PACKAGE_DIR` points to).
PACKAGE_NAME = (__package__ or __name__).split(".")[0]  # `python -m` runs this module as __main__
#: Modules that orchestrate runs, as paths relative to :data:`PACKAGE_DIR`: they do not count in the whole-package
#: :func:`code_hash`. A notebook's own closure (:func:`notebook_code_modules`) counts whatever it imports, this
#: module included (lessons 02-04 reach it through their checkpoints, every lesson through the cache keys of
#: :func:`molft_utils.runs.finetune.code_version`).
ORCHESTRATION_MODULES = ("runs/batch.py", "runs/cache_jobs.py", "runs/identity.py")
#: Version of the logic hashing (:func:`logic_source`, :func:`cell_logic_source`). Records made with another
#: version are compared by their text hashes until :func:`molft_utils.runs.batch.upgrade_record` renews them, so
#: a change of the hashing never makes a current run look stale.
LOGIC_VERSION = 1
#: The batch runner's record of a run (its identity and wall time), beside the run's ``result.json``.
BATCH_FILE = "batch.json"



def notebook_source_hash(path: Path) -> str:
    """Hash of the cell types and sources (outputs and metadata do not count)."""
    return source_hash(nbformat.read(path, as_version=4))


def source_hash(nb: nbformat.NotebookNode) -> str:
    """:func:`notebook_source_hash` of a notebook already read."""
    text = json.dumps([(c.cell_type, c.source) for c in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_hash(package: Path | None = None, files: Sequence[Path] | None = None) -> str:
    """Hash of package source files, by path (relative to the package) and content.

    ``files`` are the files to hash (e.g. :func:`notebook_code_modules` of one notebook); by default every
    ``**/*.py`` of ``package`` except :data:`ORCHESTRATION_MODULES`. ``package`` defaults to
    :data:`PACKAGE_DIR` (this ``molft_utils``, all its subpackages).
    """
    return _hash_files(package, files, bytes)[0]


def _hash_files(package: Path | None, files: Sequence[Path] | None, *contents: Callable[[bytes], bytes]) -> list[str]:
    """One hash per ``content`` of the files' bytes, by package-relative path (each file read once)."""
    digests = [hashlib.sha256() for _ in contents]
    root = Path(package or PACKAGE_DIR)
    chosen = sorted(root.rglob("*.py")) if files is None else sorted(Path(f) for f in files)
    for path in chosen:
        rel = path.relative_to(root).as_posix()
        if rel in ORCHESTRATION_MODULES or "__pycache__" in path.parts:
            continue
        data = path.read_bytes()
        for digest, content in zip(digests, contents, strict=True):
            digest.update(rel.encode() + b"\0" + content(data) + b"\0")
    return [d.hexdigest()[:16] for d in digests]


def _without_magics(source: str) -> str:
    """IPython magics and shell escapes blanked (they are not Python and import nothing from the package)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def logic_source(source: str, *, keep_module_docstring: bool = False) -> str:
    """What Python executes of ``source``: its syntax tree without docstrings, as text.

    Comments, blank lines and formatting do not reach the tree; docstrings (a string constant as the first
    statement of a class or function, and of the module unless ``keep_module_docstring``) are dropped. Source
    that does not parse (or nests too deeply to serialise) is returned as it is: every byte then counts.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef) + (() if keep_module_docstring else (ast.Module,))
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:]
    try:
        return _canonical(tree)
    except RecursionError:
        return source


def cell_logic_source(source: str) -> str:
    """:func:`logic_source` of a notebook cell as the kernel runs it.

    IPython's own input transformation turns magics and shell escapes into calls where they stand; a cell's first
    string is kept (a cell made of a string displays it).
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: magics stay unparsable, so such a cell counts by its text
        python = source
    else:
        python = TransformerManager().transform_cell(source)
    return logic_source(python, keep_module_docstring=True)


def _canonical(node: object) -> str:
    """A syntax tree as text that does not depend on the Python version's defaults.

    Like :func:`ast.dump` without positions, but fields that are ``None`` or empty are left out whatever the
    version (``ast.dump``'s own choice changed in Python 3.13, and newer versions add fields such as
    ``type_params`` that are empty in code that does not use them).
    """
    if isinstance(node, ast.AST):
        fields = ((name, getattr(node, name, None)) for name in node._fields)
        inner = ", ".join(f"{name}={_canonical(value)}" for name, value in fields if value not in (None, []))
        return f"{type(node).__name__}({inner})"
    if isinstance(node, list):
        return "[" + ", ".join(_canonical(item) for item in node) + "]"
    return repr(node)


def _logic_bytes(data: bytes) -> bytes:
    return logic_source(data.decode("utf-8")).encode()


def _notebook_logic_hash(nb: nbformat.NotebookNode) -> str:
    text = json.dumps([cell_logic_source(c.source) for c in nb.cells if c.cell_type == "code"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def notebook_logic_hash(path: Path) -> str:
    """Hash of the notebook's code cells as :func:`cell_logic_source` (Markdown, comments, docstrings do not count)."""
    return _notebook_logic_hash(nbformat.read(path, as_version=4))


def code_logic_hash(package: Path | None = None, files: Sequence[Path] | None = None) -> str:
    """:func:`code_hash` of the same files, each as :func:`logic_source` (comments and docstrings do not count)."""
    return _hash_files(package, files, _logic_bytes)[0]


def notebook_identity(path: Path, package: Path | None = None) -> dict[str, object]:
    """The identity of a notebook's code today: its name, text hashes and logic hashes (no parameters).

    Each file is read once, so the text and the logic hashes describe the same bytes. A notebook that prints
    package source (``inspect.getsource``) shows comments and docstrings as output: its package code counts by
    its text (``code_logic_hash`` is then the text hash).
    """
    nb = nbformat.read(path, as_version=4)
    files = _notebook_modules(nb, Path(package or PACKAGE_DIR))
    shows_source = any("getsource" in c.source for c in nb.cells if c.cell_type == "code")
    text, logic = _hash_files(package, files, bytes, _logic_bytes)
    return {
        "notebook": path.name,
        "notebook_hash": source_hash(nb),
        "code_hash": text,
        "logic_version": LOGIC_VERSION,
        "notebook_logic_hash": _notebook_logic_hash(nb),
        "code_logic_hash": text if shows_source else logic,
    }


#: The keys of an identity that decide whether a run is current (see :func:`logic_identity`).
LOGIC_KEYS = ("notebook", "logic_version", "notebook_logic_hash", "code_logic_hash", "parameters")


def logic_identity(identity: dict) -> dict:
    """The part of ``identity`` that decides whether a run is current: notebook name, logic hashes, parameters."""
    return {k: identity.get(k) for k in LOGIC_KEYS}


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
    return _notebook_modules(nbformat.read(path, as_version=4), Path(package or PACKAGE_DIR))


def _notebook_modules(nb: nbformat.NotebookNode, root: Path) -> list[Path] | None:
    """:func:`notebook_code_modules` of a notebook already read."""
    maps = _package_maps(root)
    pending: set[str] = {""}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            pending |= _imported_modules(ast.parse(_without_magics(cell.source)), root, maps)
        except SyntaxError:
            return None
    return _closure(pending, root, maps)


def module_code_modules(dotted: str, package: Path | None = None) -> list[Path]:
    """The package's source files that ``molft_utils.<dotted>`` runs when imported: it and its imports of the
    package, followed transitively (as :func:`notebook_code_modules` does for a notebook)."""
    root = Path(package or PACKAGE_DIR)
    if _module_file(root, dotted) is None:
        raise ValueError(f"{PACKAGE_NAME}.{dotted}: no such module")
    return _closure({"", dotted}, root, _package_maps(root))


@functools.cache
def module_logic_hash(dotted: str) -> str:
    """:func:`code_logic_hash` of :func:`module_code_modules`: the version of the code behind a cached artefact.

    Cache keys carry it instead of a hand-bumped version number, so an artefact is rebuilt exactly when the logic
    of the code that builds it changed (comments and docstrings do not count). Computed once per process.
    """
    return code_logic_hash(files=module_code_modules(dotted))


def _closure(pending: set[str], root: Path, maps: dict[str, str]) -> list[Path]:
    """The files of the package modules ``pending`` and everything they import from the package, sorted."""
    pending = set(pending)
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

    Reads the identity the batch runner stored in ``result_dir/batch.json`` and compares it with that of
    ``notebooks/<notebook>`` now (:func:`identity_change`; parameters are the run's own and do not count).
    Returns ``"current"``, ``"stale (notebook changed)"``, ``"stale (code changed)"``,
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
    change = identity_change(identity, notebook_identity(nb, package))
    return "current" if change is None else f"stale ({change})"


def has_logic_hashes(identity: dict) -> bool:
    """True for an identity with logic hashes of this :data:`LOGIC_VERSION`; False for a record written before
    they existed (text hashes only) or with another version of the logic hashing."""
    has = "notebook_logic_hash" in identity and "code_logic_hash" in identity
    return has and identity.get("logic_version") == LOGIC_VERSION


def identity_change(old: dict, new: dict) -> str | None:
    """``"notebook changed"`` or ``"code changed"`` between a recorded identity and today's, or None when the
    run is current (parameters are not compared: the caller decides whether they count).

    ``old`` is compared by its logic hashes; a record without them (written before they existed, or by another
    :data:`LOGIC_VERSION`) by its text hashes, which is stricter: the same text runs the same logic. ``new``
    must have both kinds (:func:`notebook_identity`).
    """
    if old.get("notebook") != new["notebook"]:
        return "notebook changed"
    kind = ("notebook_logic_hash", "code_logic_hash") if has_logic_hashes(old) else ("notebook_hash", "code_hash")
    if old.get(kind[0]) != new[kind[0]]:
        return "notebook changed"
    if old.get(kind[1]) != new[kind[1]]:
        return "code changed"
    return None


def text_change(old: dict, new: dict) -> list[str]:
    """The text hashes (``notebook_hash``, ``code_hash``) that differ between ``old`` and ``new``.

    For a current run (:func:`identity_change` is None) these are edits that change no logic: Markdown,
    comments, docstrings, formatting.
    """
    return [k for k in ("notebook_hash", "code_hash") if old.get(k) != new.get(k)]
