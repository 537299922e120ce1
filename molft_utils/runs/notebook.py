"""Small conveniences shared by the notebooks: setup, numbered figures, run directories.

A notebook's second cell calls :func:`setup`, which resolves smoke mode, seeds everything, quiets
library chatter, chooses threads and the device, and returns a :class:`NotebookContext` that knows
where the run writes its outputs and numbers the figures::

    ctx = setup("01_finetune_and_mlm", seed=seed, smoke=smoke, out_dir=out_dir)
    ...
    ctx.figure(fig, "Learning curves of the three fine-tuned models.")   # saves and captions "Figure 1."
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

from molft_utils.core.device import autocast_dtype, get_device, seed_everything
from molft_utils.core.records import REPO_ROOT
from molft_utils.core.settings import get_settings
from molft_utils.runs.finetune import resolve_smoke

__all__ = ["NotebookContext", "setup"]

log = logging.getLogger(__name__)


@dataclass
class NotebookContext:
    """What a notebook run needs to know about itself.

    Attributes
    ----------
    name
        Notebook stem, e.g. ``"01_finetune_and_mlm"``.
    seed, smoke
        The run's seed and whether it is a smoke run.
    out_dir
        Where figures and ``result.json`` go (``reports/<name>/seed=<s>`` under the batch runner,
        ``runs/<name>/seed=<s>`` — git-ignored — when run by hand).
    device
        Compute device; ``precision`` is the autocast dtype name or ``"fp32"``.
    """

    name: str
    seed: int
    smoke: bool
    out_dir: Path
    device: torch.device
    precision: str
    threads: int
    _figures: int = field(default=0, repr=False)

    def figure(self, fig, caption: str, name: str | None = None) -> str:
        """Save ``fig`` as ``fig<N>_<name>.png`` in :attr:`out_dir` and display a numbered caption.

        Returns the caption text (``"Figure N. caption"``).
        """
        self._figures += 1
        stem = f"fig{self._figures}" + (f"_{name}" if name else "")
        fig.savefig(self.out_dir / f"{stem}.png", dpi=120, bbox_inches="tight")
        text = f"**Figure {self._figures}.** {caption}"
        try:
            from IPython.display import Markdown, display

            display(fig)
            display(Markdown(text))
            import matplotlib.pyplot as plt

            plt.close(fig)
        except ImportError:  # outside IPython
            log.info("%s", text)
        return text

    def describe(self) -> dict:
        """The run's environment for the result record."""
        return {"device": str(self.device), "precision": self.precision, "torch_threads": self.threads}


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("molft_utils").setLevel(logging.WARNING)
    try:
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")
    except ImportError:
        pass


def setup(
    name: str,
    seed: int = 0,
    smoke: bool | None = None,
    out_dir: str | Path | None = None,
    threads: int | None = None,
) -> NotebookContext:
    """Prepare a notebook run.

    Parameters
    ----------
    name
        Notebook stem.
    seed
        Seeds python, numpy and torch.
    smoke
        ``None`` reads ``MOLFT_SMOKE`` (the tests set it).
    out_dir
        Output directory; ``None`` gives ``runs/<name>/seed=<seed>`` (``runs-smoke/...`` in smoke mode).
    threads
        Torch intra-op threads; ``None`` reads ``MOLFT_NUM_THREADS`` (the batch runner sets it when
        it runs jobs in parallel), else keeps torch's default.
    """
    smoke = resolve_smoke(smoke)
    seed_everything(seed)
    _quiet_libraries()
    if threads is None:
        threads = get_settings().num_threads
    if threads:
        torch.set_num_threads(threads)
    if out_dir is None:
        out_dir = REPO_ROOT / ("runs-smoke" if smoke else "runs") / name / f"seed={seed}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = get_device()
    dtype = autocast_dtype(device, "auto")
    precision = str(dtype).removeprefix("torch.") if dtype is not None else "fp32"
    return NotebookContext(name, seed, smoke, out_dir, device, precision, torch.get_num_threads())


_TEXT_BAR = re.compile(r"\d+%\|.*\|")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def count_progress_outputs(nb: nbformat.NotebookNode) -> int:
    """Number of progress-bar outputs in an executed notebook (widget views and text tqdm refreshes).

    With ipywidgets every bar is one widget output; without it every refresh of a text bar is one
    ``stderr`` output, which is what floods an executed notebook.
    """
    total = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                total += len(_TEXT_BAR.findall(str(out.get("text", ""))))
            elif _WIDGET_VIEW in out.get("data", {}):
                total += 1
    return total
