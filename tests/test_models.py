"""PatchGuard model, presets, scoring rule and checkpoint I/O."""

from __future__ import annotations

import pickle

import pytest
import torch

from pgaudit.data.grid import mask_to_grid
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models import backbones
from pgaudit.models.adapters import as_detector
from pgaudit.models.checkpoint import (
    NotAPgauditCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from pgaudit.models.detector import DetectorOutput, topk_mean
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PRESETS, PatchGuardConfig, get_preset


@pytest.fixture(scope="module")
def tiny() -> PatchGuard:
    torch.manual_seed(0)
    return PatchGuard(get_preset("tiny")).eval()


def test_tiny_outputs_one_logit_per_patch(tiny):
    logits = tiny(torch.rand(2, 3, 128, 128))
    assert logits.shape == (2, 8, 8)
    assert torch.isfinite(logits).all()


def test_attention_is_captured_only_on_request(tiny, monkeypatch):
    calls = []
    original = backbones.block_with_attention

    def counting(block, x):
        calls.append(1)
        return original(block, x)

    monkeypatch.setattr(backbones, "block_with_attention", counting)
    x = torch.rand(1, 3, 128, 128)
    plain = tiny(x)
    assert calls == []
    logits, attentions = tiny(x, return_attention=True)
    assert len(calls) == len(tiny.config.reg_blocks) == len(attentions)
    # Explicit attention path computes the same function as timm's fused path.
    torch.testing.assert_close(plain, logits, atol=1e-4, rtol=1e-4)
    # Among patch tokens only: [B, heads, 64, 64], rows are (sub-)distributions.
    assert attentions[0].shape == (1, 3, 64, 64)
    assert (attentions[0].sum(-1) <= 1 + 1e-5).all()


def test_lite_preset_uses_pretrained_cnn():
    model = PatchGuard(get_preset("lite")).eval()
    assert model(torch.rand(1, 3, 128, 128)).shape == (1, 8, 8)
    # The ImageNet weights were loaded (random init has unit-variance BN statistics).
    bn = model.feature_extractor.cnn[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    # Batch-norm statistics stay frozen in train mode.
    model.train()
    assert not bn.training


def test_paper_preset_matches_the_official_layout():
    config = get_preset("paper")
    assert config.image_size == 224 and config.feature_blocks == (12,)
    assert config.reg_blocks == (6, 9, 12) and config.reg_weights == (0.005, 0.01, 0.05)
    assert (config.dsc_layers, config.dsc_heads, config.dsc_hidden) == (1, 4, 2048)
    keys = PatchGuard(config).state_dict().keys()
    assert "discriminator.positional_encodings" in keys
    assert "discriminator.transformer_encoder.0.attn.in_proj_weight" in keys
    assert "discriminator.transformer_encoder.0.linear.3.weight" in keys
    assert "discriminator.output_layer.0.weight" in keys
    assert "feature_extractor.pretrained_model.patch_embed.proj.weight" in keys


def test_unknown_preset_is_a_user_error():
    with pytest.raises(PgauditError, match="unknown preset 'huge'.*tiny"):
        get_preset("huge")


def test_config_round_trips_through_a_dict():
    for config in PRESETS.values():
        assert PatchGuardConfig.from_dict(config.to_dict()) == config


def test_topk_mean_and_maps():
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, :3] = torch.tensor([3.0, 6.0, 9.0])
    assert topk_mean(logits, 3).item() == pytest.approx(6.0)
    detector = as_detector(type("D", (), {"top_k": 1, "image_size": 32})())
    assert detector.scores(DetectorOutput(logits)).item() == pytest.approx(9.0)
    maps = detector.anomaly_map(logits, 32)
    assert maps.shape == (1, 32, 32)
    # Smoothing keeps the hot spot in the hot corner.
    assert maps[0, :8, :24].mean() > maps[0, 16:, 16:].mean()


def test_mask_to_grid_any_pixel_rule():
    masks = torch.zeros(1, 16, 16)
    masks[0, 5, 9] = 1  # one pixel in cell (1, 2) of a 4x4 grid of 4-px cells
    grid = mask_to_grid(masks, (4, 4))
    assert grid.sum() == 1 and grid[0, 1, 2] == 1


def test_checkpoint_round_trip_is_atomic_and_safe(tmp_path, tiny):
    path = save_checkpoint(tmp_path / "model.pt", tiny, training={"epochs": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 3, 128, 128)
    torch.testing.assert_close(loaded(x), tiny(x))
    assert meta["config"]["name"] == "tiny" and meta["training"] == {"epochs": 3}
    # Loadable with weights_only=True: no code can run on load.
    torch.load(path, weights_only=True)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, tiny):
    path = save_checkpoint(tmp_path / "model.pt", tiny)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PgauditError, match="model.pt is not a .*PyTorch file.*copied completely"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(NotAPgauditCheckpoint, match="weights.pt is not a pgaudit checkpoint"):
        load_checkpoint(path)


class _Boom:
    def __reduce__(self):
        return (print, ("side effect",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Boom()}, path, pickle_module=pickle)
    with pytest.raises(ParameterError, match="pass trust_pickle only if"):
        load_checkpoint(path)
    assert "side effect" not in capsys.readouterr().out


def test_damaged_checkpoint_members_give_a_clear_error(tmp_path, tiny):
    """Regression: damage inside a valid zip (missing member, flipped bytes) is not a traceback."""
    import zipfile

    path = save_checkpoint(tmp_path / "model.pt", tiny)
    missing = tmp_path / "missing.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(missing, "w") as dst:
        for name in src.namelist():
            if not name.endswith("data.pkl"):
                dst.writestr(name, src.read(name))
    with pytest.raises(PgauditError, match="missing.pt is not a readable PyTorch file"):
        load_checkpoint(missing)
    flipped = tmp_path / "flipped.pt"
    data = bytearray(path.read_bytes())
    for i in range(5000, 6000):
        data[i] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(PgauditError, match="flipped.pt is not a readable PyTorch file"):
        load_checkpoint(flipped)
