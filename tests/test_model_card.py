"""The embedded backbones' model cards: rendered from the records their runs wrote, nothing typed by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from molft_utils.models.backbone import DEFAULT_BACKBONE, MLM_BACKBONE
from molft_utils.models.model_card import render_model_card
from molft_utils.pretraining.pretrain import write_model_card

RECORDS = ("pretraining.json", "quality_gate.json", "overlap.json", "ablation.json")


def _records_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The card's records of ``model_dir`` (no weights) in a folder of their own."""
    copy = tmp_path / model_dir.name
    copy.mkdir()
    for name in RECORDS:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, copy / name)
    return copy


@pytest.mark.parametrize("model_dir", [DEFAULT_BACKBONE, MLM_BACKBONE], ids=lambda p: p.name)
def test_committed_card_is_what_its_records_render(model_dir: Path) -> None:
    # a card edited by hand, or a record changed without rendering the card again, fails here
    assert (model_dir / "README.md").read_text() == render_model_card(model_dir)


def test_card_follows_its_records(tmp_path: Path) -> None:
    model_dir = _records_copy(DEFAULT_BACKBONE, tmp_path)
    card = render_model_card(model_dir)
    assert "v2: MLM + descriptor regression" in card and "## Quality gate on Lipophilicity" in card

    record = json.loads((model_dir / "pretraining.json").read_text())
    record["history"]["steps"] = 123_456_789
    (model_dir / "pretraining.json").write_text(json.dumps(record))
    assert "| optimiser steps | 123,456,789 (batch" in render_model_card(model_dir)

    (model_dir / "quality_gate.json").unlink()
    assert "Not measured yet for this checkpoint" in render_model_card(model_dir)

    del record["descriptors"]  # an MLM-only record
    (model_dir / "pretraining.json").write_text(json.dumps(record))
    assert "the MLM-only embedded backbone of molft (v1)" in render_model_card(model_dir)


def test_write_model_card_writes_the_rendered_card(tmp_path: Path) -> None:
    model_dir = _records_copy(MLM_BACKBONE, tmp_path)
    path = write_model_card(model_dir)
    assert path == model_dir / "README.md"
    assert path.read_text() == (MLM_BACKBONE / "README.md").read_text()
