"""Progress bars: one bar per training run, TQDM_DISABLE honoured, one output per bar in an executed notebook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import TINY_SMILES
from nbclient import NotebookClient
from nbformat import v4

from molft_utils.core.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, tqdm_disable: str | None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: tqdm reads ``TQDM_*`` variables when it is imported."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    if tqdm_disable is not None:
        env["TQDM_DISABLE"] = tqdm_disable
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)


def test_progress_flag_and_tqdm_disable() -> None:
    code = (
        "from molft_utils.core.progress import progress_bar as p\n"
        "print(p([]).disable, p([], progress=False).disable)"
    )
    assert _run(code, None).stdout.split() == ["False", "True"]
    assert _run(code, "1").stdout.split() == ["True", "True"]  # the environment wins over progress=True
    with pytest.raises(TypeError, match="progress=False"):
        progress_bar(range(3), disable=False)


def test_tqdm_disable_also_silences_notebook_bars() -> None:
    """tqdm.notebook passes disable=False explicitly, which would override TQDM_DISABLE: progress_bar reads it."""
    code = (
        "import molft_utils.core.progress as m\n"
        "from tqdm.notebook import tqdm\n"
        "m.tqdm = tqdm  # the class tqdm.auto picks inside a Jupyter kernel\n"
        "print(m.progress_bar([]).disable)"
    )
    assert _run(code, "1").stdout.split() == ["True"]
    assert _run(code, "0").stdout.split() == ["True"]  # as tqdm reads it: any non-empty value disables
    assert _run(code, None).stdout.split()[-1] == "False"  # (outside Jupyter the bar prints as text)


FIT_CODE = f"""
import torch
from transformers import RoFormerForMaskedLM
from molft_utils.models.backbone import RegressionModel
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.models.tokenizer import build_tokenizer
from molft_utils.training.train import TrainConfig, fit
tok = build_tokenizer()
smiles = {TINY_SMILES!r}
labels = [0.1 * i for i in range(len(smiles))]
torch.manual_seed(0)
backbone = RoFormerForMaskedLM(backbone_config(len(tok), layers=1, hidden=32, heads=2, intermediate=64)).roformer
fit(RegressionModel(backbone), tok, smiles, labels, smiles, labels,
    TrainConfig(epochs=3, batch_size=2, patience=10, seed=0), progress=True)
"""


@pytest.mark.integration
def test_fit_draws_one_bar_with_validation_rmse() -> None:
    err = _run(FIT_CODE, None).stderr
    assert len(re.findall(r"fine-tune:\s+0%", err)) == 1, err  # one bar for the run, none per batch (3 per epoch)
    assert "3/3" in err and re.search(r"valid_rmse=\d+\.\d{3}", err), err
    assert "fine-tune" not in _run(FIT_CODE, "1").stderr


NOTEBOOK_CODE = """
import os, torch
os.environ.pop("TQDM_DISABLE", None)
from transformers import RoFormerForMaskedLM
from molft_utils.models.backbone import RegressionModel
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.models.tokenizer import build_tokenizer
from molft_utils.training.train import TrainConfig, fit
tok = build_tokenizer()
smiles = {smiles!r}
labels = [0.1 * i for i in range(len(smiles))]
for run in range(3):
    torch.manual_seed(run)
    backbone = RoFormerForMaskedLM(backbone_config(len(tok), layers=1, hidden=32, heads=2, intermediate=64)).roformer
    fit(RegressionModel(backbone), tok, smiles, labels, smiles, labels,
        TrainConfig(epochs=4, batch_size=2, patience=10, seed=run), progress=True)
"""


@pytest.mark.integration
def test_executed_notebook_has_one_progress_output_per_run(tmp_path) -> None:
    """Three fits of 4 epochs x 3 batches in one cell: 3 progress outputs (widgets), no tqdm warning."""
    nb = v4.new_notebook()
    nb.cells = [v4.new_code_cell(NOTEBOOK_CODE.format(smiles=TINY_SMILES))]
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    text = json.dumps([o for o in outputs if o.output_type == "stream"])
    assert "IProgress" not in text and "Warning" not in text, text[:500]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 3, [o.output_type for o in outputs]
    assert len(outputs) == 3, [o.output_type for o in outputs]
    state = json.dumps(nb.metadata.get("widgets", {}))
    assert "valid_rmse=" in state  # the postfix reached the widget


def test_count_progress_outputs_helper() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [v4.new_code_cell("x")]
    nb.cells[0].outputs = [
        v4.new_output("stream", name="stderr", text="\rMLM:   1%|          | 3/580 [00:01<05:58,  1.61it/s]"),
        v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"}}),
        v4.new_output("stream", name="stdout", text="done\n"),
    ]
    from molft_utils.runs.notebook import count_progress_outputs

    assert count_progress_outputs(nb) == 2
