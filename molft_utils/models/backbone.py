"""Backbones and the regression model.

``load_backbone()`` returns the embedded default backbone (a small RoFormer pretrained by this
project, ``data/models/molft-roformer-small``) with its tokenizer; ``load_backbone(path)`` loads
any folder saved with ``save_pretrained`` (for example an MLM-adapted backbone from the run
cache); ``load_backbone("ibm/MoLFormer-XL-both-10pct")`` loads the real MoLFormer-XL from the
Hugging Face Hub when online.

:class:`RegressionModel` is the model of the reference study: backbone → masked mean pooling
over the tokens → head ``Linear(h, h) → ReLU → Dropout(0.1) → Linear(h, 1)``.

Speed. :func:`speed_up_backbone` (applied by :class:`RegressionModel` unless asked not to)
changes how a RoFormer backbone computes, not what: its self-attention modules become
:class:`FastRoFormerSelfAttention` (same parameters and module names ``query``/``key``/``value``,
so committed weights and PEFT target modules are unchanged) which applies the rotary embedding
in a de-interleaved head basis (cheaper, same scores) and otherwise runs transformers' eager
attention arithmetic; ``attention="sdpa"`` adds :func:`torch.nn.functional.scaled_dot_product_attention`
in eval mode (measured no faster at these lengths, so off by default; its backward is slower). Dropout layers become
:class:`FastDropout`: the same keep probability (to 6e-6), masks drawn from 15 random bits per
element, four elements per 64-bit draw, which was about 3× cheaper on CPU than ``bernoulli_``
(one-off micro-benchmark; a profile put dropout masks at 18 % of a bf16 training step
on the 2-core machine). Only the random masks differ from the eager model; with dropout off the
two agree to rounding.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention

__all__ = [
    "DEFAULT_BACKBONE",
    "MLM_BACKBONE",
    "MODELS_DIR",
    "embedded_backbones",
    "resolve_backbone",
    "MOLFORMER_ID",
    "MOLFORMER_REVISION",
    "BackboneUnavailableError",
    "FastDropout",
    "RegressionModel",
    "FastRoFormerSelfAttention",
    "count_parameters",
    "load_backbone",
    "mean_pool",
    "random_init_like",
    "speed_up_backbone",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: The embedded backbone that the project pretrains and ships.
MODELS_DIR = ROOT / "data" / "models"
#: The default backbone (v2: MLM + descriptor multi-task pretraining). v1, MLM only, is ``molft-roformer-small-mlm``.
DEFAULT_BACKBONE = MODELS_DIR / "molft-roformer-small"
#: The MLM-only backbone (v1), the MoLFormer-faithful objective.
MLM_BACKBONE = MODELS_DIR / "molft-roformer-small-mlm"
MOLFORMER_ID = "ibm/MoLFormer-XL-both-10pct"
#: Hub commit of MoLFormer-XL that is loaded (its remote code runs from it). Taken from public code that
#: pins the same revision; it could not be checked against the Hub from the offline build machine.
MOLFORMER_REVISION = "7b12d946c181a37f6012b9dc3b002275de070314"


class BackboneUnavailableError(RuntimeError):
    """A backbone could not be loaded (offline, wrong id, missing folder)."""


def _is_remote_id(name: str) -> bool:
    return not Path(name).exists() and "/" in name and not name.startswith((".", "/"))


def embedded_backbones() -> list[str]:
    """Names of the backbones shipped under ``data/models/`` (each loadable by name)."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file()) if MODELS_DIR.is_dir() else []


def resolve_backbone(name_or_path: str | Path | None) -> str | Path:
    """``None``/``"default"`` → the default backbone; a shipped name (e.g. ``"molft-roformer-small-mlm"``) → its
    folder; anything else unchanged (a folder or a Hub id)."""
    if name_or_path in (None, "default"):
        return DEFAULT_BACKBONE
    if isinstance(name_or_path, str) and "/" not in name_or_path and (MODELS_DIR / name_or_path).is_dir():
        return MODELS_DIR / name_or_path
    return name_or_path


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
    name_or_path = resolve_backbone(name_or_path)
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


#: Resolution of :func:`fast_dropout`'s keep test (15 random bits per element).
_DROPOUT_BITS = 15


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with cheap random masks; same keep probability as :func:`torch.nn.functional.dropout`.

    An element is kept when 15 uniform random bits are at least ``round(p * 2**15)``, so the drop
    probability is ``p`` to within ``2**-16`` (0.1 → 0.100006). Four elements share one 64-bit draw of
    the CPU generator (``random_``), which costs about a third of ``bernoulli_``; kept values are scaled
    by ``1 / (1 - p)`` as usual. The masks are a deterministic function of the global seed, but a
    different function than ``torch.nn.functional.dropout``'s.
    """
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = x.numel()
    bits = torch.empty(-(-n // 4), dtype=torch.int64, device=x.device).random_().view(torch.int16)[:n]
    keep = (bits & (2**_DROPOUT_BITS - 1)) >= round(p * 2**_DROPOUT_BITS)
    return x * (keep.view(x.shape).to(x.dtype) * (1.0 / (1.0 - p)))


class FastDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` drawing its masks with :func:`fast_dropout` (same ``p``, no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:  # nobody asks for it in this project; keep nn.Dropout's semantics then
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoFormer's rotary embedding on interleaved pairs: (x0, x1) → (x0 cos − x1 sin, x1 cos + x0 sin).

    ``x`` is (B, H, T, D); ``cos``/``sin`` are (…, T, D/2). Same layout as the input.
    """
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)


def _rotate_split(x: torch.Tensor, n_heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotation of :func:`_rotate` from a (B, T, H·D) projection, returned de-interleaved.

    The result is (B, H, T, D) with the rotated even elements of each head first and the odd ones
    second. Queries and keys permuted the same way have the same dot products, so attention
    scores are unchanged, and the contiguous halves make this about 2.5× cheaper than rotating
    interleaved pairs (forward + backward).
    """
    b, t, _ = x.shape
    halves = x.view(b, t, n_heads, -1, 2).permute(0, 2, 1, 4, 3).contiguous()  # B, H, T, 2, D/2
    x0, x1 = halves.unbind(-2)
    return torch.cat((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)


class FastRoFormerSelfAttention(RoFormerSelfAttention):
    """RoFormer self-attention computed with fewer kernels; parameters and names as the parent's.

    Queries and keys are rotated in a de-interleaved head basis (:func:`_rotate_split`), then
    ``softmax(q kᵀ / √d + mask)`` is computed in float32 like transformers' eager code, dropping
    probabilities with :func:`fast_dropout` in training mode. With ``sdpa_in_eval`` (set by
    ``speed_up_backbone(attention="sdpa")``) eval mode calls
    :func:`torch.nn.functional.scaled_dot_product_attention` instead (the fused CPU kernel): measured
    no faster at ~56 tokens (0.97× at batch 32), faster only for long sequences, and its result
    depends on the padded length at the bit level, so it is off by default. In training the fused
    kernel's backward was 4× slower than the explicit product.
    Cross-attention, caches and ``output_attentions=True`` are delegated to the parent unchanged.
    Attention probabilities are not returned (``None``), as transformers' SDPA attention does.
    """

    #: Use the fused SDPA kernel in eval mode (see the class docstring).
    sdpa_in_eval: bool = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        sinusoidal_pos: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        past_key_values=None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        if encoder_hidden_states is not None or past_key_values is not None or output_attentions:
            return super().forward(
                hidden_states, attention_mask, sinusoidal_pos, encoder_hidden_states, past_key_values,
                output_attentions, **kwargs,
            )  # fmt: skip
        if torch.is_autocast_enabled(hidden_states.device.type):
            # one cast for the three projections instead of one each
            hidden_states = hidden_states.to(torch.get_autocast_dtype(hidden_states.device.type))
        q, k, v = self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
        shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        if sinusoidal_pos is None:
            q, k = q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2)
            v = v.view(shape).transpose(1, 2)
        else:
            sin, cos = sinusoidal_pos.to(q.dtype).chunk(2, dim=-1)
            # queries and keys in the same de-interleaved head basis: q·k unchanged
            q = _rotate_split(q, self.num_attention_heads, cos, sin)
            k = _rotate_split(k, self.num_attention_heads, cos, sin)
            v = v.view(shape).transpose(1, 2)
            if self.rotary_value:  # values keep the original basis (they form the output)
                v = _rotate(v, cos, sin)
        mask = attention_mask
        if self.sdpa_in_eval and not self.training:
            if mask is not None and mask.dtype != torch.bool:
                mask = mask.to(q.dtype)
            context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            # In training the fused CPU kernel is slower (its backward took 4x the explicit version
            # at 56 tokens, bf16, one thread), and it cannot drop attention probabilities.
            p = self.dropout.p if self.training else 0.0
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
            probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
            context = torch.matmul(fast_dropout(probs, p), v)
        context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
        return context, None


def speed_up_backbone(
    backbone: nn.Module,
    attention: str = "fast",
    dropout: str = "fast",
    attention_dropout: float | None = None,
) -> dict[str, int]:
    """Switch a backbone's attention and dropout to the faster implementations, in place.

    Parameters
    ----------
    backbone
        Any module; only :class:`RoFormerSelfAttention` and plain :class:`torch.nn.Dropout`
        sub-modules are touched (their class is swapped; parameters, buffers and names stay).
    attention
        ``"fast"`` (:class:`FastRoFormerSelfAttention`), ``"sdpa"`` (the same with the fused SDPA
        kernel in eval mode) or ``"eager"`` (leave as loaded).
    dropout
        ``"fast"`` (:class:`FastDropout`) or ``"torch"`` (leave as loaded).
    attention_dropout
        If given, the attention-probability dropout of every RoFormer attention module is set to
        this value (``0.0`` skips drawing attention-probability masks, a change of the recipe's
        hyper-parameters). ``None`` keeps the backbone's configured value (the default recipe: 0.1).

    Returns
    -------
    dict
        How many attention and dropout modules were switched.
    """
    if attention not in ("fast", "sdpa", "eager"):
        raise ValueError(f"attention must be 'fast', 'sdpa' or 'eager', got {attention!r}")
    if dropout not in ("fast", "torch"):
        raise ValueError(f"dropout must be 'fast' or 'torch', got {dropout!r}")
    counts = {"attention": 0, "dropout": 0}
    for module in backbone.modules():
        if isinstance(module, RoFormerSelfAttention):
            if attention != "eager" and type(module) is RoFormerSelfAttention:
                module.__class__ = FastRoFormerSelfAttention
                counts["attention"] += 1
            if isinstance(module, FastRoFormerSelfAttention) and attention != "eager":
                module.sdpa_in_eval = attention == "sdpa"
            if attention_dropout is not None:
                module.dropout.p = float(attention_dropout)
        elif dropout == "fast" and type(module) is nn.Dropout:
            module.__class__ = FastDropout
            counts["dropout"] += 1
    return counts


class RegressionModel(nn.Module):
    """Encoder + masked mean pooling + two-layer regression head.

    Parameters
    ----------
    backbone
        A transformer encoder returning ``last_hidden_state``.
    dropout
        Dropout in the head (0.1 as in the reference study).
    fast
        Apply :func:`speed_up_backbone` (:class:`FastRoFormerSelfAttention`, :class:`FastDropout`); ``False`` keeps
        the backbone exactly as loaded (transformers' eager attention, ``bernoulli_`` dropout).
    attention_dropout
        Passed to :func:`speed_up_backbone`; ``None`` keeps the backbone's configured value.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        dropout: float = 0.1,
        fast: bool = True,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if fast:
            speed_up_backbone(backbone, attention_dropout=attention_dropout)
        elif attention_dropout is not None:
            speed_up_backbone(backbone, attention="eager", dropout="torch", attention_dropout=attention_dropout)
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
