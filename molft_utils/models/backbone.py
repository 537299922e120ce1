"""Backbones and the regression model.

``load_backbone()`` returns the embedded default backbone (a small RoFormer pretrained by this
project, ``data/models/molft-roformer-small``) with its tokenizer; ``load_backbone(path)`` loads
any folder saved with ``save_pretrained`` (for example an MLM-adapted backbone from the run
cache); ``load_backbone("ibm/MoLFormer-XL-both-10pct")`` loads the real MoLFormer-XL from the
Hugging Face Hub when online.

:class:`RegressionModel` is the model of the reference study: backbone → masked mean pooling
over the tokens → head ``Linear(h, h) → ReLU → Dropout(0.1) → Linear(h, 1)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BACKBONE",
    "MOLFORMER_ID",
    "MOLFORMER_REVISION",
    "BackboneUnavailableError",
    "RegressionModel",
    "count_parameters",
    "load_backbone",
    "mean_pool",
    "random_init_like",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: The embedded backbone that the project pretrains and ships.
DEFAULT_BACKBONE = ROOT / "data" / "models" / "molft-roformer-small"
MOLFORMER_ID = "ibm/MoLFormer-XL-both-10pct"
#: Hub commit of MoLFormer-XL that is loaded (its remote code runs from it). Taken from public code that
#: pins the same revision; it could not be checked against the Hub from the offline build machine.
MOLFORMER_REVISION = "7b12d946c181a37f6012b9dc3b002275de070314"


class BackboneUnavailableError(RuntimeError):
    """A backbone could not be loaded (offline, wrong id, missing folder)."""


def _is_remote_id(name: str) -> bool:
    return not Path(name).exists() and "/" in name and not name.startswith((".", "/"))


def load_backbone(
    name_or_path: str | Path | None = None, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a pretrained encoder and its tokenizer.

    Parameters
    ----------
    name_or_path
        ``None`` or ``"default"`` for the embedded backbone, a local folder, or a Hugging Face
        Hub id such as ``"ibm/MoLFormer-XL-both-10pct"``.
    revision
        Hub revision; MoLFormer defaults to :data:`MOLFORMER_REVISION`.

    Returns
    -------
    (backbone, tokenizer)
        The encoder without task head (``last_hidden_state`` output) and its tokenizer.

    Raises
    ------
    BackboneUnavailableError
        When the folder does not exist or the Hub cannot be reached; the message says how to get
        the weights.
    """
    if name_or_path in (None, "default"):
        name_or_path = DEFAULT_BACKBONE
    name = str(name_or_path)
    if not _is_remote_id(name):
        path = Path(name)
        if not (path / "config.json").exists():
            raise BackboneUnavailableError(f"{path}: no backbone here (config.json missing)")
        backbone = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return backbone, tokenizer
    kwargs: dict = {"trust_remote_code": True, "revision": revision}
    if name == MOLFORMER_ID:
        kwargs["revision"] = revision or MOLFORMER_REVISION
        # without deterministic_eval MoLFormer redraws its random feature map on every forward pass
        kwargs["deterministic_eval"] = True
    try:
        backbone = AutoModel.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True, revision=kwargs["revision"])
    except OSError as err:
        raise BackboneUnavailableError(
            f"could not load {name!r} from the Hugging Face Hub ({err.__class__.__name__}: {err}).\n"
            "This needs network access the first time. Online, run once:\n"
            f"    huggingface-cli download {name}"
            + (f" --revision {kwargs['revision']}" if kwargs["revision"] else "")
            + "\nthen set HF_HUB_OFFLINE=1 to use the local copy, or pass the downloaded folder as model=."
            " Offline, use the embedded default backbone (model=None)."
        ) from err
    return backbone, tokenizer


def random_init_like(backbone: PreTrainedModel) -> PreTrainedModel:
    """A freshly initialised encoder of the same architecture (the 'no pretraining' control)."""
    return type(backbone)(backbone.config)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states over real (non-padding) tokens: (B, T, H) → (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class RegressionModel(nn.Module):
    """Encoder + masked mean pooling + two-layer regression head.

    Parameters
    ----------
    backbone
        A transformer encoder returning ``last_hidden_state``.
    dropout
        Dropout in the head (0.1 as in the reference study).
    """

    def __init__(self, backbone: PreTrainedModel, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.dropout = dropout

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled encoder features, shape (B, H)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predictions (in the scaled target space), shape (B,); with features if asked."""
        features = self.embed(input_ids, attention_mask)
        pred = self.head(features).squeeze(-1)
        return (pred, features) if return_features else pred

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Save backbone (``save_pretrained``), head (safetensors) and ``extra`` metadata to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / "backbone", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(path / "head.safetensors"))
        meta = {"dropout": self.dropout} | (extra or {})
        (path / "regression.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple[RegressionModel, dict]:
        """Load a model written by :meth:`save`; returns the model and its metadata."""
        path = Path(path)
        meta = json.loads((path / "regression.json").read_text())
        model = cls(AutoModel.from_pretrained(path / "backbone"), dropout=meta["dropout"])
        model.head.load_state_dict(load_file(str(path / "head.safetensors")))
        return model.eval(), meta
