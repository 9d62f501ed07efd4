"""`harden`/`train` options reach the saved recipe and the training; ε warm-up, cosine schedule,
the presets the README names (tiny's defaults pinned, small builds) and --backbone-weights."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest
import torch
from small_models import SMALL

from pgaudit.data.layouts import open_category
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.models.checkpoint import load_checkpoint, read_torch_file, save_checkpoint
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import TrainConfig, get_preset
from pgaudit.training.loop import harden, log_path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """8 training images of the 64 px widget and an untrained SMALL PatchGuard checkpoint."""
    root = tmp_path_factory.mktemp("harden-options")
    make_synthetic_dataset(root / "data", size=64, n_train=8, n_test=4, categories=("widget",))
    torch.manual_seed(0)
    save_checkpoint(root / "start.pt", PatchGuard(SMALL))
    return root


def _log(path) -> list[dict]:
    return [json.loads(line) for line in log_path(path).read_text().splitlines()]


def test_harden_options_reach_the_saved_recipe_and_the_training(project, run_cli):
    out = project / "opts.pt"
    res = run_cli(
        "harden", project / "start.pt", project / "data" / "widget", "--out", out,
        "--epochs", "2", "--eps", "4/255", "--lr", "0.002", "--steps", "2", "--batch-size", "4",
        "--no-reg", "--carry", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    recipe = read_torch_file(out)["training"]["recipe"]
    expected = replace(
        SMALL.train, epochs=2, eps=4 / 255, lr=0.002, steps=2, batch_size=4, regularise=False,
        carry_perturbations=True, adversarial=True,
    )  # fmt: skip
    assert recipe == asdict(expected)
    text = " ".join(res.stdout.split())
    assert "PGD-2 at ε=4/255, 2 epochs, batch 4, lr 0.002" in text
    assert "attention regulariser off" in text and "perturbations carried" in text
    log = _log(out)
    assert [r["eps"] for r in log] == pytest.approx([4 / 255, 4 / 255])  # the attack's budget
    assert "reg" not in log[0] or log[0]["reg"] == 0.0
    # the other way round: --no-carry and the regulariser on
    out2 = project / "opts2.pt"
    res = run_cli(
        "harden", project / "start.pt", project / "data" / "widget", "--out", out2,
        "--epochs", "1", "--steps", "1", "--batch-size", "8", "--no-carry", "--device", "cpu",
        "--workers", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    recipe = read_torch_file(out2)["training"]["recipe"]
    assert recipe == asdict(replace(SMALL.train, epochs=1, steps=1, batch_size=8))
    assert "attention regulariser on" in " ".join(res.stdout.split())


def test_eps_warms_up_linearly_and_lr_follows_the_cosine(project):
    """8 images in batches of 4 (2 steps per epoch), 4 epochs: one clean epoch, ε reaches its
    value over the next 2, and the learning rate anneals to lr · lr_min_factor at the end."""
    category = open_category(project / "data" / "widget")
    recipe = TrainConfig(
        epochs=4, batch_size=4, lr=1e-3, steps=1, eps=8 / 255, eps_warmup_epochs=2,
        clean_epochs=1, fapa_max_side=60,
    )  # fmt: skip
    torch.manual_seed(0)
    harden(PatchGuard(SMALL), category, recipe, out=project / "sched.pt", seed=0, device="cpu")
    log = _log(project / "sched.pt")
    # ε of each epoch's last step: 0 (clean), then (step + 1) / 4 of the way up, then ε.
    assert [r["eps"] for r in log] == pytest.approx([0.0, 8 / 255 / 2, 8 / 255, 8 / 255])
    total, low = 4 * 2, recipe.lr_min_factor

    def cosine(step: int) -> float:
        return recipe.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * step / total)))

    assert [r["lr"] for r in log] == pytest.approx([cosine(2 * e) for e in (1, 2, 3, 4)])
    assert log[-1]["lr"] == pytest.approx(recipe.lr * low)


def test_the_tiny_preset_keeps_the_defaults_the_readme_headlines():
    from pgaudit.training.setup import trainable_model

    tiny = get_preset("tiny")
    assert tiny.image_size == 128 and tiny.backbone == "vit_tiny_patch16_224"
    assert tiny.backbone_kwargs == dict(
        patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0
    )
    assert not tiny.pretrained_backbone
    train = tiny.train
    assert (train.epochs, train.steps, train.eps) == (50, 3, 8 / 255)
    assert train.adversarial and train.regularise
    assert train.carry_perturbations is True and train.attack_topk_weight == 3.0
    assert (train.ema_decay, train.val_fraction, train.select) == (0.98, 0.15, True)
    assert train.eps_warmup_epochs == 3 and train.fapa_max_side == 60
    # `train` / `harden patchguard` without --preset use it
    start = trainable_model("patchguard")
    assert start.config.name == "tiny" and start.train == train


def test_the_small_preset_builds():
    small = get_preset("small")
    assert (small.name, small.backbone, small.image_size) == ("small", "vit_small_patch16_224", 224)
    torch.manual_seed(0)
    model = PatchGuard(small).eval()
    assert model.image_size == 224
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 224, 224))
    assert logits.shape == (1, 14, 14) and torch.isfinite(logits).all()


def test_backbone_weights_from_the_cli(project, run_cli):
    import timm

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                               img_size=64, **SMALL.backbone_kwargs)  # fmt: skip
    torch.save(source.state_dict(), project / "vit.pth")
    out = project / "with-weights.pt"
    res = run_cli(
        "harden", project / "start.pt", project / "data" / "widget", "--out", out,
        "--backbone-weights", project / "vit.pth", "--epochs", "1", "--clean", "--lr", "1e-12",
        "--batch-size", "8", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "backbone weights from" in res.stdout and "vit.pth" in res.stdout
    model, _ = load_checkpoint(out)
    start, _ = load_checkpoint(project / "start.pt")
    got = model.feature_extractor.pretrained_model.blocks[0].attn.qkv.weight
    want = source.blocks[0].attn.qkv.weight
    before = start.feature_extractor.pretrained_model.blocks[0].attn.qkv.weight
    assert torch.allclose(got, want, atol=1e-6)  # lr 1e-12: the loaded weights, not the start's
    assert not torch.allclose(before, want, atol=1e-2)
    wider = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              img_size=64, **{**SMALL.backbone_kwargs, "embed_dim": 96})  # fmt: skip
    torch.save(wider.state_dict(), project / "wide.pth")
    res = run_cli(
        "harden", project / "start.pt", project / "data" / "widget", "--out", project / "x.pt",
        "--backbone-weights", project / "wide.pth", "--epochs", "1", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 2 and "wide.pth" in res.stderr and "Traceback" not in res.stderr


def test_a_run_never_replaces_what_it_should_not(project, run_cli):
    """An existing --out: a file that is not a checkpoint is never touched; a finished model or an
    interrupted run is replaced only with --overwrite (--resume continues the interrupted one)."""
    args = ("harden", project / "start.pt", project / "data" / "widget", "--epochs", "1",
            "--steps", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0")  # fmt: skip
    notes = project / "notes.txt"
    notes.write_text("someone's data")
    res = run_cli(*args, "--out", notes)
    assert res.exit_code == 2 and "exists and is not a pgaudit checkpoint" in res.stderr
    res = run_cli(*args, "--out", notes, "--overwrite")
    assert res.exit_code == 2 and notes.read_text() == "someone's data"

    done = project / "done.pt"
    assert run_cli(*args, "--out", done).exit_code == 0
    before, log_before = done.read_bytes(), log_path(done).read_bytes()
    res = run_cli(*args, "--out", done, "--lr", "1e-3")
    assert res.exit_code == 2
    assert "holds a finished model: pass --overwrite to replace it, or choose another --out" in (
        " ".join(res.stderr.split())
    )
    assert done.read_bytes() == before and log_path(done).read_bytes() == log_before
    assert run_cli(*args, "--out", done, "--lr", "1e-3", "--overwrite").exit_code == 0
    assert read_torch_file(done)["training"]["recipe"]["lr"] == 1e-3

    halfway = project / "halfway.pt"
    model, _ = load_checkpoint(project / "start.pt")

    class Stop(Exception):
        pass

    def stop(record):
        raise Stop

    with pytest.raises(Stop):
        harden(model.train(), open_category(project / "data" / "widget"),
               replace(model.config.train, epochs=2, steps=1, batch_size=4), out=halfway,
               device="cpu", on_epoch=stop)  # fmt: skip
    res = run_cli(*args[:3], "--out", halfway, "--device", "cpu", "--workers", "0")
    assert res.exit_code == 2
    assert "holds an interrupted run: add --resume to continue it" in " ".join(res.stderr.split())
    res = run_cli(*args[:3], "--out", halfway, "--resume", "--device", "cpu", "--workers", "0")
    assert res.exit_code == 0 and "resumed at epoch 1" in res.stdout


def test_preset_paper_is_not_silently_trained_from_random_weights(project, run_cli):
    """The published method fine-tunes pretrained DINOv2: without its weights (or an explicit
    --from-scratch) `train --preset paper` would train something else under the paper's name."""
    from pgaudit.errors import ParameterError
    from pgaudit.training.setup import trainable_model

    res = run_cli("train", project / "data" / "widget", "--preset", "paper", "--out",
                  project / "paper.pt")  # fmt: skip
    assert res.exit_code == 2
    text = " ".join(res.stderr.split())
    assert "preset paper fine-tunes a pre-trained DINOv2" in text
    assert "--backbone-weights FILE" in text and "--pretrained (a hub download)" in text
    assert "--from-scratch" in text
    assert not (project / "paper.pt").exists()
    start = trainable_model("patchguard", preset="paper", from_scratch=True)
    assert any("not the paper's method" in note for note in start.notes)
    with pytest.raises(ParameterError, match="from_scratch excludes"):
        trainable_model("patchguard", preset="paper", from_scratch=True, pretrained=True)


def test_a_corrupt_image_read_in_a_loader_worker_is_one_sentence(project, run_cli, tmp_path):
    """torch re-raises a DataLoader worker's error as "Caught PgauditError in DataLoader worker
    process 0. Original Traceback …": the user gets the original sentence."""
    import shutil

    data = tmp_path / "widget"
    shutil.copytree(project / "data" / "widget", data)
    sorted((data / "train" / "good").glob("*.png"))[2].write_bytes(b"not a png")
    res = run_cli("harden", project / "start.pt", data, "--out", tmp_path / "h.pt", "--epochs",
                  "1", "--steps", "1", "--batch-size", "4", "--device", "cpu", "--workers", "1")  # fmt: skip
    assert res.exit_code == 2
    last = res.stderr.strip().splitlines()[-1]
    assert "cannot read the image" in last and "Caught" not in res.stderr
    assert "Traceback" not in res.stderr
