"""Crafting precision (pgaudit.precision): low precision may steer attacks and training steps, but
every score that enters a metric, a validation figure or a loss is fp32."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from small_models import SMALL
from torch import Tensor, nn

import pgaudit.models.backbones as backbones
import pgaudit.precision as precision_mod
from pgaudit.attacks.algorithms import make_attack
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.runner import run_audit
from pgaudit.attacks.sanity import check_precision_parity, trace_pgd
from pgaudit.attacks.suites import AttackSpec, Suite
from pgaudit.data.layouts import open_category
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.errors import ParameterError
from pgaudit.models.checkpoint import load_checkpoint
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import TrainConfig
from pgaudit.precision import resolve_precision
from pgaudit.training.loop import harden, train_step

SIZE = 32


class SpyDetector(nn.Module):
    """Patch logits ``100 · mean(R − G) − 2`` on 4x4 patches; records, per forward pass, whether
    autocast was on and whether autograd was recording."""

    image_size = SIZE
    top_k = 3

    def __init__(self, masked_in_low_precision: bool = False) -> None:
        super().__init__()
        self.color = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.color.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
        self.masked = masked_in_low_precision
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, images: Tensor) -> Tensor:
        low = torch.is_autocast_enabled("cpu")
        self.calls.append((low, torch.is_grad_enabled()))
        logits = 100 * F.avg_pool2d(self.color(images), 4).squeeze(1) - 2
        return logits.detach() + 0 * images.sum() if self.masked and low else logits


def _toy(n: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Grey images; the first n // 2 get a reddish square (images, labels, masks)."""
    g = torch.Generator().manual_seed(seed)
    images = (0.5 + 0.05 * torch.randn(n, 1, SIZE, SIZE, generator=g)).repeat(1, 3, 1, 1)
    labels, masks = torch.zeros(n, dtype=torch.long), torch.zeros(n, SIZE, SIZE)
    for i in range(n // 2):
        images[i, 0, 8:18, 8:18] += 0.03
        images[i, 1, 8:18, 8:18] -= 0.03
        masks[i, 8:18, 8:18], labels[i] = 1, 1
    return images.clamp(0, 1), labels, masks


class ToySet(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.images, self.label_tensor, self.masks = _toy(n)

    def __len__(self) -> int:
        return len(self.label_tensor)

    @property
    def labels(self) -> list[int]:
        return self.label_tensor.tolist()

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.label_tensor[i]),
                "mask": self.masks[i], "foreground": torch.ones(SIZE, SIZE), "index": i}  # fmt: skip


# --- resolving a precision ---------------------------------------------------------------------


def test_fp16_on_a_cpu_and_unknown_values_are_refused_naming_precision():
    with pytest.raises(ParameterError, match="fp16 runs on CUDA GPUs only") as info:
        resolve_precision("fp16", "cpu")
    assert "precision" in info.value.parameters
    with pytest.raises(ParameterError, match="use one of fp32, bf16, fp16, auto"):
        resolve_precision("half", "cpu")
    with pytest.raises(ParameterError, match="precision"):
        TrainConfig(precision="bf32")


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_on_a_cpu_that_runs_it_natively(monkeypatch, native):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: honoured


# --- audits: craft low, judge fp32 -------------------------------------------------------------


@pytest.mark.parametrize("library", ["native", "art"])
def test_attacks_craft_under_autocast_and_score_in_fp32(library):
    images, labels, masks = _toy(8)
    detector = SpyDetector()
    attacker = Attacker(detector, input_shape=(3, SIZE, SIZE), cells=64, precision="bf16")
    attack = make_attack(AttackSpec("pgd", library, "inf", 4 / 255, 5, "detection"))
    adv, output = attacker.run(attack, images, BatchTarget(labels, None))
    gradient_passes = [low for low, grad in detector.calls if grad]
    assert len(gradient_passes) >= 5 and all(gradient_passes)  # every step crafted in bf16
    assert detector.calls[-1] == (False, False)  # the score: fp32, no autograd
    assert output.logits.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(output.logits, detector(adv))  # exactly an fp32 forward of adv


def test_a_bf16_audit_records_its_precision_and_matches_fp32(tmp_path):
    specs = [AttackSpec("pgd", "native", "inf", 8 / 255, 10, o) for o in ("detection", "localization")]  # fmt: skip
    suite = Suite("two", "two PGD runs", specs, headline_eps=8 / 255)
    runs = {
        p: run_audit(
            SpyDetector(),
            ToySet(24),
            suite,
            out_dir=tmp_path / p,
            progress=False,
            gallery_size=0,
            bootstrap=0,
            precision=p,
        )  # fmt: skip
        for p in ("fp32", "bf16")
    }
    assert runs["bf16"].meta["precision"] == "bf16" and runs["fp32"].meta["precision"] == "fp32"
    assert '"precision": "bf16"' in (tmp_path / "bf16" / "results.json").read_text()
    from pgaudit.report.render import render_report

    html = render_report(tmp_path / "bf16", tmp_path / "report.html").read_text()
    assert '<dt>Attack precision (scores fp32)</dt><dd class="mono break">bf16</dd>' in html
    clean = {p: r.clean.metrics["image_auroc"].value for p, r in runs.items()}
    assert clean["fp32"] == clean["bf16"] > 0.99  # the clean pass never runs in low precision
    for a32, a16 in zip(runs["fp32"].attacks, runs["bf16"].attacks, strict=True):
        target = "image_auroc" if a32.objective == "detection" else "pixel_auroc"
        v32, v16 = a32.metrics[target].value, a16.metrics[target].value
        assert v32 < clean["fp32"] - 0.3  # not vacuous: the attack works
        assert abs(v16 - v32) <= 0.02, (a32.id, v32, v16)


def test_precision_parity_flags_an_attack_that_low_precision_weakened():
    images, labels, _ = _toy(16)
    for masked, status in ((False, "pass"), (True, "warn")):
        detector = SpyDetector(masked_in_low_precision=masked)
        trace = trace_pgd(detector, images, labels, eps=4 / 255, steps=5)
        check = check_precision_parity(
            detector, images, labels, eps=4 / 255, precision="bf16", trace=trace
        )
        assert check.status == status, check.evidence
        assert "crafted in bf16" in check.evidence


def test_the_sanity_checklist_runs_precision_parity_only_for_low_precision_audits(tmp_path):
    from pgaudit.attacks.sanity import SanityBudget, run_sanity_checks

    images, labels, _ = _toy(8)
    budget = SanityBudget(n_images=8, pgd_steps=2, unbounded_steps=2, noise_draws=2)
    names = {
        p: [
            c.name
            for c in run_sanity_checks(
                SpyDetector(), images, labels, [], eps=4 / 255, budget=budget, precision=p
            )
        ]  # fmt: skip
        for p in ("fp32", "bf16")
    }
    assert "precision-parity" not in names["fp32"]
    assert names["bf16"] == [*names["fp32"], "precision-parity"]


# --- the model: the explicit attention path under CPU bf16 -------------------------------------


def test_bf16_runs_every_attention_block_explicitly_and_stays_close_to_fp32(monkeypatch):
    calls = {"n": 0}
    original = backbones.block_with_attention

    def counting(block, x):
        calls["n"] += 1
        return original(block, x)

    monkeypatch.setattr(backbones, "block_with_attention", counting)
    torch.manual_seed(0)
    model = PatchGuard(SMALL).eval()
    x = torch.rand(4, 3, SMALL.image_size, SMALL.image_size)
    with torch.no_grad():
        full = model(x)
        assert calls["n"] == 0  # fp32: the fused path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert calls["n"] == SMALL.backbone_kwargs["depth"]
    assert (low.float() - full).abs().max() < 0.05 * max(1.0, float(full.abs().max()))


# --- hardening --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widget(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, size=64, n_train=16, n_test=4, categories=("widget",))
    return open_category(root / "widget")


RECIPE = TrainConfig(epochs=1, batch_size=8, lr=1e-3, steps=2, fapa_max_side=60)


def test_a_bf16_training_step_crafts_and_trains_under_autocast_with_fp32_gradients(widget):
    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.fapa import FapaConfig
    from pgaudit.training.batches import BatchSpec, PseudoAnomalyBatches

    data = AnomalyDataset(widget.train[:8], SMALL.image_size)
    batch = PseudoAnomalyBatches(data, (8, 8), FapaConfig(max_side=60), 0, 0.05)[
        BatchSpec(0, 0, tuple(range(8)))
    ]
    torch.manual_seed(0)
    model = PatchGuard(SMALL)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    parts = train_step(model, batch, replace(RECIPE, precision="bf16"), optimizer, eps=4 / 255,
                       rng=np.random.RandomState(0), reg_weights=SMALL.reg_weights)  # fmt: skip
    assert len(seen) == 3 and all(seen)  # 2 attack steps + the training forward
    assert np.isfinite(parts["loss"]) and parts["reg"] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_harden_records_the_decided_precision_in_the_checkpoint(widget, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)
    torch.manual_seed(0)
    result = harden(PatchGuard(SMALL), widget, replace(RECIPE, precision="auto"),
                    out=tmp_path / "m.pt", device="cpu")  # fmt: skip
    assert result.train_config.precision == "bf16"
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["training"]["recipe"]["precision"] == "bf16"
    with pytest.raises(ParameterError, match="fp16 runs on CUDA GPUs only"):
        harden(PatchGuard(SMALL), widget, replace(RECIPE, precision="fp16"),
               out=tmp_path / "h.pt", device="cpu")  # fmt: skip
    assert not (tmp_path / "h.pt").exists()


def test_cli_refuses_fp16_on_a_cpu_before_any_work(widget, run_cli, tmp_path):
    res = run_cli("train", widget.root, "--out", tmp_path / "m.pt", "--epochs", "1",
                  "--device", "cpu", "--precision", "fp16")  # fmt: skip
    assert res.exit_code == 2 and "--precision fp16 runs on CUDA GPUs only" in res.stderr
    assert not (tmp_path / "m.pt").exists()
    res = run_cli("attack", "patchguard", widget.root, "--out", tmp_path / "audit",
                  "--device", "cpu", "--precision", "fp16")  # fmt: skip
    assert res.exit_code == 2 and "--precision fp16 runs on CUDA GPUs only" in res.stderr
    assert not (tmp_path / "audit").exists()
    res = run_cli("attack", "patchguard", widget.root, "--precision", "half")
    assert res.exit_code == 2 and "--precision 'half': use one of" in res.stderr


def test_the_fp16_loss_scaler_path_updates_like_the_plain_one(widget):
    """fp16 runs on CUDA only; its GradScaler path (scale, unscale before clipping, step) is the
    same code on the CPU, where a scale of 2**10 must leave the update unchanged."""
    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.fapa import FapaConfig
    from pgaudit.training.batches import BatchSpec, PseudoAnomalyBatches

    data = AnomalyDataset(widget.train[:8], SMALL.image_size)
    batch = PseudoAnomalyBatches(data, (8, 8), FapaConfig(max_side=60), 0, 0.05)[
        BatchSpec(0, 0, tuple(range(8)))
    ]
    weights = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        torch.manual_seed(0)
        model = PatchGuard(SMALL)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        train_step(model, batch, RECIPE, optimizer, eps=4 / 255, rng=np.random.RandomState(0),
                   reg_weights=SMALL.reg_weights, scaler=scaler)  # fmt: skip
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.manual_seed(0)
    start = torch.cat([p.detach().flatten() for p in PatchGuard(SMALL).parameters()])
    assert not torch.equal(weights[0], start)  # the step did update
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
