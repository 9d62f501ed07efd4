"""The hardening loop: attack hygiene, loss decrease, resume, robustness gain, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from small_models import SMALL

from pgaudit.data.layouts import open_category
from pgaudit.data.records import Category, Sample
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.checkpoint import load_checkpoint, read_torch_file
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig, TrainConfig
from pgaudit.training.adversarial import training_attack
from pgaudit.training.batches import BatchSpec, PseudoAnomalyBatches
from pgaudit.training.loop import describe_foreground, harden, log_path, train_step

RECIPE = TrainConfig(
    epochs=3, batch_size=8, lr=1e-3, steps=1, eps_warmup_epochs=0, fapa_max_side=60
)


@pytest.fixture(scope="module")
def widget(tmp_path_factory) -> Category:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, size=64, n_train=24, n_test=20, categories=("widget",))
    return open_category(root / "widget")


def _model(seed: int = 0) -> PatchGuard:
    torch.manual_seed(seed)
    return PatchGuard(SMALL)


def _batch(category: Category) -> dict[str, torch.Tensor]:
    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.fapa import FapaConfig

    data = AnomalyDataset(category.train[:8], SMALL.image_size)
    maker = PseudoAnomalyBatches(
        data, (8, 8), FapaConfig(max_side=60), seed=0, jitter_strength=0.05
    )
    return maker[BatchSpec(epoch=0, index=0, items=tuple(range(8)))]


def test_attack_freezes_weights_and_never_captures_attention(widget, monkeypatch) -> None:
    import pgaudit.models.backbones as backbones

    calls = {"n": 0}
    original = backbones.block_with_attention

    def counting(block, x):
        calls["n"] += 1
        return original(block, x)

    monkeypatch.setattr(backbones, "block_with_attention", counting)
    model = _model().train()
    batch = _batch(widget)
    adv = training_attack(model, batch["anomalies"], batch["labels"], eps=8 / 255, steps=2,
                          topk_weight=0.5, rng=np.random.RandomState(0))  # fmt: skip
    assert calls["n"] == 0
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model.training
    assert (adv - batch["anomalies"]).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, batch, replace(RECIPE, steps=2), optimizer, eps=8 / 255,
               rng=np.random.RandomState(0), reg_weights=SMALL.reg_weights)  # fmt: skip
    assert calls["n"] == len(SMALL.reg_blocks)  # only the one training forward captures


def test_a_few_steps_on_one_batch_drive_the_loss_down(widget) -> None:
    model = _model()
    batch = _batch(widget)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = [
        train_step(
            model,
            batch,
            RECIPE,
            optimizer,
            eps=4 / 255,
            rng=np.random.RandomState(i),
            reg_weights=SMALL.reg_weights,
        )["loss"]  # fmt: skip
        for i in range(8)
    ]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("carry", [False, True], ids=["fresh-starts", "carried-perturbations"])
def test_resume_after_interruption_gives_the_same_weights(widget, tmp_path, carry) -> None:
    data = replace(widget, train=widget.train[:8])
    recipe = replace(RECIPE, batch_size=4, carry_perturbations=carry)
    straight = harden(_model(), data, recipe, out=tmp_path / "a.pt", seed=3, device="cpu")

    class Killed(Exception):
        pass

    def kill_after_two(record: dict) -> None:
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        harden(_model(), data, recipe, out=tmp_path / "b.pt", seed=3, device="cpu",
               on_epoch=kill_after_two)  # fmt: skip
    saved = read_torch_file(tmp_path / "b.pt")["resume"]
    # Every epoch reseeds torch from (seed, epoch): the state holds only what resume reads.
    expected = {"epoch", "seed", "train", "optimizer", "scheduler", "history"}
    assert set(saved) == expected | ({"perturbations"} if carry else set())
    torch.manual_seed(12345)  # the caller's global RNG state must not matter
    resumed = harden(_model(seed=99), data, replace(recipe, lr=0.5), out=tmp_path / "b.pt",
                     seed=3, device="cpu", resume=True)  # fmt: skip
    assert resumed.start_epoch == 2 and resumed.train_config == recipe
    a, _ = load_checkpoint(tmp_path / "a.pt")
    b, meta = load_checkpoint(tmp_path / "b.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    lines = log_path(tmp_path / "b.pt").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert meta["training"]["epochs_done"] == 3
    with pytest.raises(PgauditError, match="no saved training state"):
        harden(_model(), data, recipe, out=tmp_path / "b.pt", device="cpu", resume=True)
    with pytest.raises(ParameterError, match="no run to continue; drop resume"):
        harden(_model(), data, RECIPE, out=tmp_path / "none.pt", device="cpu", resume=True)


def test_hardening_beats_clean_training_under_pgd(widget) -> None:
    """Small budget (about a minute on 2 cores): robust pixel AUROC, hardened > clean-trained,
    and hardening closes much of the gap between clean and robust pixel AUROC.

    Measured at this budget, model and training seeds 0-5 (seed 0 is this test, deterministic):
    robust gain 0.042, 0.021, 0.038, 0.045, 0.021, 0.033; the hardened gap was 0.44, 0.50, 0.60
    and 0.47 of the clean-trained one (seeds 0, 1, 4, 5). The margins keep room for numerics."""
    from pgaudit.training.evaluate import robustness

    recipe = replace(RECIPE, epochs=10, steps=2)
    robust, gap = {}, {}
    for adversarial in (False, True):
        result = harden(_model(), widget, replace(recipe, adversarial=adversarial), seed=0,
                        device="cpu")  # fmt: skip
        metrics = robustness(result.model, widget.test, eps_list=(8 / 255,), steps=10,
                             objectives=("localization",))  # fmt: skip
        robust[adversarial] = metrics[f"{8 / 255:.6f}"]["pixel_auroc"]
        gap[adversarial] = metrics["clean"]["pixel_auroc"] - robust[adversarial]
    assert robust[True] > robust[False] + 0.02, robust
    assert gap[True] < 0.8 * gap[False], gap  # at least a fifth of the drop removed (measured 2/5+)


def test_foreground_description() -> None:
    root = Path("/nonexistent")
    with_fg = Sample(root / "a.png", 0, "good", foreground=root / "a_fg.png")
    without = Sample(root / "b.png", 0, "good")
    assert describe_foreground(Category("x", root, "mvtec", train=[with_fg])) == "foreground masks"
    assert "no foreground" in describe_foreground(Category("x", root, "mvtec", train=[without]))
    assert "1 of 2" in describe_foreground(Category("x", root, "mvtec", train=[with_fg, without]))


def test_batches_are_deterministic_and_labelled(widget) -> None:
    first, again = _batch(widget), _batch(widget)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert first["labels"].shape == (8, 8, 8)
    assert (first["labels"].flatten(1).amax(dim=1) == 1).all()  # every pseudo-anomaly is labelled


def test_cli_train_clean_and_errors(widget, run_cli, tmp_path, monkeypatch) -> None:
    out = tmp_path / "m.pt"
    res = run_cli("train", widget.root, "--out", out, "--epochs", "1", "--clean", "--batch-size",
                  "24", "--device", "cpu", "--workers", "0", "--no-carry")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "foreground masks" in res.stdout and out.is_file()
    _, meta = load_checkpoint(out)
    recipe = meta["training"]["recipe"]
    assert recipe["adversarial"] is False and recipe["carry_perturbations"] is False
    assert log_path(out).read_text().count("\n") == 1
    assert json.loads(log_path(out).read_text())["eps"] == 0.0  # no attack in a clean run
    res = run_cli("harden", out, widget.root, "--out", tmp_path / "h.pt", "--resume")
    assert res.exit_code == 2 and "no run to continue; drop --resume to start" in res.stderr
    res = run_cli("harden", "patchguard", widget.root, "--eps", "eight")
    assert res.exit_code == 2 and "--eps" in res.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("harden", "patchguard", widget.root, "--pretrained", "--out", tmp_path / "p.pt")
    assert res.exit_code == 2 and "--backbone-weights" in res.stderr
    res = run_cli("harden", "nothing.pt", widget.root)
    assert res.exit_code == 2 and "nothing.pt" in res.stderr


def test_backbone_weights_load_with_resampling_and_refuse_mismatch(tmp_path) -> None:
    import timm

    from pgaudit.training.backbone_weights import load_backbone_weights

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                               img_size=32, **SMALL.backbone_kwargs)  # fmt: skip
    torch.save({"state_dict": source.state_dict()}, tmp_path / "vit.pth")
    model = _model()
    notes = load_backbone_weights(model, tmp_path / "vit.pth")
    assert any("pos_embed" in n for n in notes)
    got = model.feature_extractor.pretrained_model.blocks[0].attn.qkv.weight
    assert torch.equal(got, source.blocks[0].attn.qkv.weight)
    wider = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              img_size=64, **{**SMALL.backbone_kwargs, "embed_dim": 96})  # fmt: skip
    torch.save(wider.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(PgauditError, match="wide.pth"):
        load_backbone_weights(model, tmp_path / "wide.pth")


def test_harden_takes_official_checkpoints_and_python_detectors(
    widget, run_cli, tmp_path, monkeypatch
) -> None:
    """`harden` resolves MODEL like `attack`: official state_dicts and Python factories train and save."""
    config = PatchGuardConfig(
        backbone="vit_small_patch14_dinov2",
        backbone_kwargs={"depth": 2},
        image_size=56,
        feature_blocks=(2,),
        reg_blocks=(1, 2),
        dsc_hidden=64,
    )
    torch.manual_seed(0)
    official = tmp_path / "patchguard_mvtec_bottle.pth"
    torch.save(dict(PatchGuard(config).state_dict()), official)
    out = tmp_path / "hardened.pt"
    res = run_cli("harden", official, widget.root, "--out", out, "--epochs", "1", "--steps", "1",
                  "--batch-size", "24", "--device", "cpu", "--workers", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "official-patchguard" in res.stdout
    hardened, meta = load_checkpoint(out)
    assert hardened.config.image_size == 56
    recipe = meta["training"]["recipe"]
    assert recipe["adversarial"] is True and (recipe["epochs"], recipe["steps"]) == (1, 1)
    start = torch.load(official, weights_only=True)
    trained = hardened.state_dict()
    assert set(start) <= set(trained)
    changed = [k for k in start if not torch.equal(start[k], trained[k])]
    assert changed, "harden saved the official checkpoint's weights unchanged"
    # ... and the official file itself is audited by the quick suite.
    res = run_cli("attack", official, widget.root, "--out", tmp_path / "audit", "--max-images",
                  "4", "--quiet", "--bootstrap", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    audited = json.loads((tmp_path / "audit" / "results.json").read_text())
    assert audited["model"]["kind"] == "official-patchguard"
    assert audited["robust"]["metrics"]["image_auroc"]["value"] is not None

    (tmp_path / "userdet.py").write_text(
        "import torch\n"
        "class D(torch.nn.Module):\n"
        "    image_size = 64\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 1, 8, stride=8)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)[:, 0]\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return D()\n"
        "def frozen():\n"
        "    return D().requires_grad_(False)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = tmp_path / "mine.pt"
    res = run_cli("harden", "userdet:build", widget.root, "--out", mine, "--epochs", "1",
                  "--steps", "1", "--batch-size", "24", "--device", "cpu", "--workers", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    from pgaudit.models.resolve import load_detector

    hardened = load_detector(str(mine), factory="userdet:build")  # the user names the code
    fresh = load_detector("userdet:build")
    assert hardened.kind == "python" and "hardened" in hardened.name
    assert not torch.equal(
        hardened.detector.module.conv.weight, fresh.detector.module.conv.weight
    )  # it trained, and the saved weights came back
    res = run_cli("harden", "userdet:frozen", widget.root, "--out", tmp_path / "f.pt")
    assert res.exit_code == 2 and "nothing to harden" in res.stderr


def test_perturbation_bank_carries_each_images_last_perturbation() -> None:
    from pgaudit.training.perturbations import PerturbationBank

    bank = PerturbationBank(4, (3, 2, 2))
    random = torch.full((2, 3, 2, 2), 0.5)
    indices = torch.tensor([1, 3])
    assert torch.equal(bank.fill(random, indices, eps=0.1), random)  # nothing stored yet
    clean = torch.rand(2, 3, 2, 2)
    bank.record(indices, clean + 0.05, clean)
    start = bank.fill(random, torch.tensor([3, 0]), eps=0.02)
    assert torch.allclose(start[0], torch.full((3, 2, 2), 0.02))  # stored, clipped to eps
    assert torch.equal(start[1], random[1])  # image 0 never attacked: the random start
    copy = PerturbationBank(4, (3, 2, 2))
    copy.load_state_dict(bank.state_dict())
    assert torch.equal(copy.fill(random, indices, 1.0), bank.fill(random, indices, 1.0))
    with pytest.raises(ValueError, match="shape"):
        PerturbationBank(5, (3, 2, 2)).load_state_dict(bank.state_dict())


def test_topk_weight_aims_the_training_attack_at_the_image_score(widget) -> None:
    """With ``topk_weight`` the attack on normal images raises their top-k score further."""
    model = _model().eval()
    images = _batch(widget)["images"]
    zeros = torch.zeros(len(images), *model.grid)
    scores = {}
    for weight in (0.0, 5.0):
        adv = training_attack(model, images, zeros, eps=8 / 255, steps=3, topk_weight=weight,
                              rng=np.random.RandomState(0))  # fmt: skip
        with torch.no_grad():
            scores[weight] = model.scores(model.predict(adv)).mean().item()
    assert scores[5.0] > scores[0.0], scores
