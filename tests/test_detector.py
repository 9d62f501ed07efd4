"""The Detector seam: DetectorOutput, the Detector base class, adapters, card() and attack_mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgaudit.attacks.adaptive import EOTDetector
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.runner import run_audit as _run_audit
from pgaudit.attacks.suites import AttackSpec, Suite
from pgaudit.models.adapters import DetectorAdapter, as_detector
from pgaudit.models.detector import (
    DEFAULT_MAP_RULE,
    OWN_SCORE_RULE,
    Detector,
    DetectorCard,
    DetectorOutput,
    attack_mode,
    smooth_upsample,
    topk_mean,
)
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import get_preset


def run_audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The audit's results as the dict it wrote to results.json."""
    return _run_audit(*args, **kwargs).to_json()


SIZE = 16


class Redness(nn.Module):
    """A plain user module: images -> bare logits [B, 4, 4] (mean red minus green per patch)."""

    image_size = SIZE

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.avg_pool2d(x[:, :1] - x[:, 1:2], 4)[:, 0]


class ScoredRedness(Redness):
    """A user module that gives its own image score next to the map (a dict)."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits = super().forward(x)
        return {"anomaly_map": logits, "image_score": logits.mean(dim=(1, 2)) * 2}


def _images(n: int = 4, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_base_class_defaults_are_the_shared_rules():
    class Grid(Detector):
        image_size = SIZE
        top_k = 2

        def forward(self, x: Tensor) -> Tensor:
            return F.avg_pool2d(x.mean(1, keepdim=True), 4)[:, 0]

    det, x = Grid(), _images()
    out = det.predict(x)
    assert isinstance(out, DetectorOutput) and out.image_score is None
    assert torch.equal(out.logits, det(x))
    assert torch.equal(det.scores(out), topk_mean(out.logits, 2))
    assert torch.equal(det.anomaly_map(out.logits, SIZE), smooth_upsample(out.logits, SIZE))
    assert det.rules() == ("top-2 mean of the logit map", DEFAULT_MAP_RULE)
    card = det.card()
    assert isinstance(card, DetectorCard) and card.info["architecture"] == "Grid"
    assert card.config is None and card.source_spec is None
    assert as_detector(det) is det  # a Detector is used as it is

    class MaxScore(Grid):
        def image_score(self, logits: Tensor) -> Tensor:
            return logits.flatten(1).amax(1)

    assert MaxScore().rules()[0] == OWN_SCORE_RULE
    own = DetectorOutput(out.logits, torch.zeros(4))
    assert torch.equal(MaxScore().scores(own), torch.zeros(4))  # an own score wins


def test_detector_output_through_a_user_adapter_keeps_gradients():
    adapter = DetectorAdapter(ScoredRedness(), SIZE)
    x = _images().requires_grad_(True)
    out = adapter.predict(x)
    assert isinstance(out, DetectorOutput) and out.logits.shape == (4, 4, 4)
    assert out.image_score is not None and out.image_score.shape == (4,)
    torch.testing.assert_close(adapter.scores(out), out.logits.mean(dim=(1, 2)) * 2)
    (grad,) = torch.autograd.grad(adapter.scores(out).sum(), x)
    assert grad.abs().sum() > 0
    # through EOT (averaged) and through the restart merge of the attacker alike
    eot = EOTDetector(adapter, 3)
    (grad,) = torch.autograd.grad(eot.scores(eot.predict(x)).sum(), x)
    assert grad.abs().sum() > 0
    assert adapter(x).shape == (4, 4, 4)  # the plain call: logits only (what training uses)


def test_the_restart_merge_keeps_the_own_score_of_the_kept_run():
    adapter = DetectorAdapter(ScoredRedness(), SIZE)
    spec = AttackSpec("pgd", "native", "inf", 8 / 255, 2, "detection", restarts=3)
    attacker = Attacker(adapter, input_shape=(3, SIZE, SIZE), cells=16, device="cpu")
    with attack_mode(adapter):
        adv, out = attacker.run(spec, _images(), BatchTarget(torch.tensor([0, 1, 0, 1]), None))
        fresh = adapter.predict(adv)
    assert out.image_score is not None
    torch.testing.assert_close(out.image_score, fresh.image_score)
    torch.testing.assert_close(out.logits, fresh.logits)


def test_a_user_module_returning_bare_logits_still_audits(tmp_path):
    specs = [AttackSpec("pgd", "native", "inf", 8 / 255, 3, "detection")]
    suite = Suite("t", "t", specs, 8 / 255)
    images = _images(8, seed=1)
    images[:4, 0] += 0.2  # reddish: anomalous
    data = [
        {"image": images[i].clamp(0, 1), "label": int(i < 4), "mask": torch.zeros(SIZE, SIZE)}
        for i in range(8)
    ]
    plain = Redness()
    results = run_audit(plain, data, suite, out_dir=tmp_path / "plain", progress=False)
    wrapped = run_audit(
        as_detector(Redness()), data, suite, out_dir=tmp_path / "wrapped", progress=False
    )
    assert results["model"]["name"] == "Redness" and "preset" not in results["model"]
    assert isinstance(plain, nn.Module) and not isinstance(plain, Detector)  # not changed
    for part in ("clean", "robust"):
        assert results[part]["metrics"] == wrapped[part]["metrics"]
    clean = np.load(tmp_path / "plain" / "scores.npz")["clean.image_scores"]
    with torch.no_grad():
        expected = topk_mean(plain(torch.stack([d["image"] for d in data])), 3).numpy()
    np.testing.assert_allclose(clean, expected, atol=1e-6)


def test_a_module_that_is_a_detector_keeps_its_own_output():
    class Own(Detector):
        image_size = SIZE

        def forward(self, x: Tensor) -> Tensor:
            return F.avg_pool2d(x.mean(1, keepdim=True), 4)[:, 0]

        def predict(self, x: Tensor) -> DetectorOutput:
            logits = self(x)
            return DetectorOutput(logits, logits.sum(dim=(1, 2)))

        def card(self) -> DetectorCard:
            return DetectorCard({"architecture": "Own", "preset": "p"})

    x = _images()
    adapter = DetectorAdapter(Own(), SIZE)
    assert adapter.rules() == Own().rules()  # before a forward: the module's own words
    out = adapter.predict(x)
    torch.testing.assert_close(out.image_score, Own()(x).sum(dim=(1, 2)))
    assert adapter.card().info["preset"] == "p"  # its card, not a describe() it lacks


def test_card_replaces_describe_config_and_source_spec():
    model = PatchGuard(get_preset("tiny"))
    card = model.card()
    assert card.info["architecture"] == "PatchGuard" and card.info["preset"] == "tiny"
    assert card.config == model.config.to_dict() and card.source_spec is None

    class Described(Redness):
        def describe(self) -> dict[str, object]:
            return {"architecture": "ignored", "note": "mine"}

    adapter = DetectorAdapter(Described(), SIZE, source_spec="pkg.mod:build")
    card = adapter.card()
    assert card.info["note"] == "mine" and card.info["architecture"] == "Described"
    assert card.info["parameters"] == 1 and card.info["image_size"] == SIZE
    assert card.source_spec == "pkg.mod:build"


def test_attack_mode_freezes_and_restores_even_on_errors():
    class Net(Detector):
        image_size = SIZE

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.5), nn.BatchNorm2d(4))
            self.head = nn.Conv2d(4, 1, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.body(x))[:, 0]

    net = Net().train()
    net.body[2].eval()  # a frozen-statistics BatchNorm inside a training model
    net.head.bias.requires_grad_(False)  # mixed flags
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    with pytest.raises(RuntimeError, match="boom"), attack_mode(net) as inside:
        assert inside is net
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    with attack_mode(None) as nothing:  # not a module: passes through
        assert nothing is None
