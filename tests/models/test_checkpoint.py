"""Checkpoint round trips and the errors a user meets with bad files."""

from __future__ import annotations

import pytest
import torch
from tests.models.conftest import small_input, small_model

from covidct.errors import CheckpointError
from covidct.models import load_checkpoint, save_checkpoint

RECIPE = {"name": "test-recipe", "size": 64}


def test_round_trip_gives_identical_outputs(model_name, tmp_path):
    model = small_model(model_name).eval()
    x = small_input(model_name)
    path = save_checkpoint(
        tmp_path / "m.pt",
        model,
        recipe=RECIPE,
        provenance={"training_data": "synthetic phantoms"},
        extra={"threshold": 0.4},
    )
    ckpt = load_checkpoint(path, expected_model=model_name)
    assert not ckpt.model.training
    assert ckpt.model_name == model_name
    assert ckpt.model.config == model.config
    assert ckpt.recipe == RECIPE
    assert ckpt.class_names == model.class_names
    assert ckpt.extra == {"threshold": 0.4}
    assert ckpt.provenance["training_data"] == "synthetic phantoms"
    assert {"covidct_version", "date", "git_commit"} <= set(ckpt.provenance)
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.model(x))


def test_checkpoint_restores_overridden_classes(tmp_path):
    model = small_model("covidnet-ct2-s", num_classes=2)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, recipe=RECIPE))
    assert ckpt.class_names == ("Non-COVID", "COVID-19")
    assert ckpt.model.fc.out_features == 2


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=RECIPE)
    with pytest.raises(CheckpointError, match="holds a 'covidnet-ct2-s' model but 'covidnet-ct2-l'"):
        load_checkpoint(path, expected_model="covidnet-ct2-l")


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=RECIPE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable covidct checkpoint"):
        load_checkpoint(path)


def test_bare_state_dict_is_refused(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(small_model("covidnet-ct2-s").state_dict(), path)
    with pytest.raises(CheckpointError, match="not a covidct checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", small_model("covidnet-ct2-s"), recipe=RECIPE)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("fc.weight")
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(e.g. \['fc.weight'\]\).*unexpected keys"):
        load_checkpoint(path)
