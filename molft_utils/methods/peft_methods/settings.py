"""PEFT settings: one dataclass per fine-tuning method (what :func:`~molft_utils.methods.peft_methods.setup.prepare`
accepts)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AdaLoraSettings",
    "BitFitSettings",
    "DoraSettings",
    "FullSettings",
    "IA3Settings",
    "LoraSettings",
    "LORA_PLACEMENTS",
    "Settings",
    "lora_variant",
]


@dataclass
class FullSettings:
    """Full fine-tuning: every parameter trains (nothing to set)."""


@dataclass
class BitFitSettings:
    """BitFit: every bias of the encoder trains (plus the head).

    Attributes
    ----------
    include_layernorm
        Also train the LayerNorm biases (the BitFit paper trains all bias terms).
    """

    include_layernorm: bool = True


@dataclass
class LoraSettings:
    """LoRA on self-attention.

    Attributes
    ----------
    r, alpha, dropout
        Rank, scaling numerator (update scaled by ``alpha / r``) and dropout on the LoRA input.
    roles
        Attention projections to adapt, a subset of ``("query", "key", "value")``.
    feedforward
        Also adapt the FFN: ``"none"``, ``"up"``, ``"down"`` or ``"both"``.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    roles: tuple[str, ...] = ("query", "key", "value")
    feedforward: str = "none"


@dataclass
class DoraSettings(LoraSettings):
    """DoRA: LoRA on the direction of the weight plus a trainable magnitude vector."""


@dataclass
class AdaLoraSettings:
    """AdaLoRA on self-attention.

    Attributes
    ----------
    init_r, target_r
        Initial rank of every adapted matrix and the average rank left after budget pruning.
    alpha, dropout
        As for LoRA.
    warmup_fraction, final_fraction
        ``tinit`` and ``tfinal`` of AdaLoRA as fractions of the total steps: steps before the
        first pruning and steps at the end with a frozen rank pattern.
    delta_t
        Steps between two budget allocations.
    beta1, beta2
        EMA coefficients of the importance score and of its uncertainty.
    orth_reg_weight
        Weight of the orthogonality regulariser ``||P^T P - I||_F + ||Q Q^T - I||_F``.
    roles
        Attention projections to adapt.
    """

    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    warmup_fraction: float = 0.1
    final_fraction: float = 0.2
    delta_t: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    roles: tuple[str, ...] = ("query", "key", "value")


@dataclass
class IA3Settings:
    """(IA)³: learned rescaling of keys, values and the FFN intermediate activation.

    Attributes
    ----------
    roles
        Attention projections whose output is rescaled (the paper: key and value).
    feedforward
        Which FFN projection to adapt; ``"down"`` rescales its input, i.e. the intermediate
        activation, as in the paper. ``"up"`` rescales the up-projection's output, ``"both"`` does
        both.
    """

    roles: tuple[str, ...] = ("key", "value")
    feedforward: str = "down"


Settings = FullSettings | BitFitSettings | LoraSettings | DoraSettings | AdaLoraSettings | IA3Settings


#: Where LoRA adapters go in the rank study of notebook 04: the attention projections (query, key, value), or those
#: plus both feed-forward projections (up and down).
LORA_PLACEMENTS = {"attention": "none", "attention+ffn": "both"}


def lora_variant(
    r: int, placement: str = "attention", alpha_per_rank: float = 2.0, dropout: float = 0.1
) -> LoraSettings:
    """LoRA settings of rank ``r`` at ``placement`` (a key of :data:`LORA_PLACEMENTS`), ``alpha = alpha_per_rank·r``.

    Keeping ``alpha / r`` fixed keeps the scale of the update ``(alpha / r) B A`` the same at every rank, so one
    learning rate (chosen for the default rank) serves the whole rank study. ``lora_variant(8)`` equals the
    default :class:`LoraSettings` (r = 8, alpha = 16, attention only).

    Raises
    ------
    ValueError
        For a rank below 1 or an unknown placement.
    """
    if int(r) != r or r < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {r!r}")
    if placement not in LORA_PLACEMENTS:
        raise ValueError(f"placement must be one of {tuple(LORA_PLACEMENTS)}, got {placement!r}")
    alpha = alpha_per_rank * r
    return LoraSettings(r=int(r), alpha=int(alpha) if float(alpha).is_integer() else alpha, dropout=dropout,
                        feedforward=LORA_PLACEMENTS[placement])
