"""Shared fixtures: a tiny randomly initialised backbone so unit tests run in seconds; a custom data set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors
from transformers import RoFormerForMaskedLM

from molft_utils.core.settings import REPO_ROOT, reload_settings
from molft_utils.data.loading import DATA_DIR, LIPOPHILICITY, md5
from molft_utils.models.tokenizer import build_tokenizer
from molft_utils.pretraining.pretrain import backbone_config


@pytest.fixture(autouse=True)
def _settings_from_the_environment():
    """Each test starts and ends with settings read from the environment (after monkeypatch has undone its changes,
    since autouse fixtures are torn down last)."""
    reload_settings()
    yield
    reload_settings()


TINY_SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1", "CCN(CC)CC"]


#: The longest file of `make test`: its Snakemake smoke batch and the custom-CSV batch, since merged into one test
#: there, were 72 % of the integration tier (reports/benchmark/test_durations_avx2.json). Scheduled first so that it
#: does not start last on a busy worker.
LONGEST_FIRST = ("test_workflow.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest work first: the longest file, then files with integration tests and the notebooks, then the rest.

    With ``--dist loadfile --no-loadscope-reorder`` (Makefile) pytest-xdist hands out files in this order, so the
    minutes-long files start early and the many short unit tests fill the gaps at the end. A file keeps the order
    of its tests (a notebook's cells share one kernel).
    """
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.path))
        if path.name in LONGEST_FIRST:
            return 0
        return 1 if item.get_closest_marker("integration") or path.suffix == ".ipynb" else 2

    file_rank: dict[str, int] = {}
    for item in items:
        key = str(item.path)
        file_rank[key] = min(file_rank.get(key, 2), rank(item))
    items.sort(key=lambda item: file_rank[str(item.path)])  # stable: collection order within a rank and a file


TPSA_MOLECULES = 150


@pytest.fixture(scope="session")
def tpsa_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 drug-like molecules of Lipophilicity relabelled with their RDKit TPSA, under other column names."""
    lipo = pd.read_csv(LIPOPHILICITY)
    smiles = lipo.smiles.iloc[:: len(lipo) // TPSA_MOLECULES].head(TPSA_MOLECULES).tolist()
    tpsa = [round(Descriptors.TPSA(Chem.MolFromSmiles(s)), 2) for s in smiles]
    path = tmp_path_factory.mktemp("tpsa data") / "tpsa_set.csv"  # a space in the folder on purpose
    pd.DataFrame({"molecule": smiles, "tpsa_A2": tpsa}).to_csv(path, index=False)
    return path


def tracked_data_state() -> tuple[str, dict[str, str]]:
    """``git status`` of ``data/`` and the md5 of every file in it (runs must leave tracked data alone)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "data"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    files = {str(p.relative_to(DATA_DIR)): md5(p) for p in sorted(DATA_DIR.rglob("*")) if p.is_file()}
    return status, files


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny_mlm(tokenizer):
    torch.manual_seed(0)
    return RoFormerForMaskedLM(backbone_config(len(tokenizer), layers=1, hidden=32, heads=2, intermediate=64))


def execute_in_process(
    input_path: str, output_path: str, parameters: dict | None = None, cwd: str | None = None, **_: object
) -> None:
    """A stand-in for ``papermill.execute_notebook`` that runs a notebook's code cells in this process.

    It does what papermill does for the batch runner, without starting a Jupyter kernel (seconds per notebook):
    the parameters are injected in a cell after the one tagged ``parameters``, the cells run in order in one
    namespace with ``cwd`` as the working directory (changed for the whole process, as papermill's is), the
    executed notebook is written to ``output_path`` also when a cell raises (with the error as the cell's
    output), and the error is raised again. Unit tests of the batch logic use it on toy notebooks; tests marked
    ``integration`` execute notebooks in real kernels.
    """
    import os

    import nbformat
    from nbformat import v4

    nb = nbformat.read(input_path, as_version=4)
    where = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), -1)
    injected = v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in (parameters or {}).items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(where + 1, injected)
    namespace: dict = {"__name__": "__main__"}
    before = os.getcwd()
    os.chdir(cwd or os.path.dirname(os.path.abspath(input_path)))
    try:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                exec(compile(cell.source, f"<cell {i}>", "exec"), namespace)
            except Exception as err:
                cell.outputs = [v4.new_output("error", ename=type(err).__name__, evalue=str(err), traceback=[])]
                nbformat.write(nb, output_path)
                raise RuntimeError(f"cell {i} raised {type(err).__name__}: {err}") from err
    finally:
        os.chdir(before)
    nbformat.write(nb, output_path)


@pytest.fixture()
def in_process_notebooks(monkeypatch):
    """The batch runner executes notebooks with :func:`execute_in_process` instead of a Jupyter kernel."""
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", execute_in_process)
