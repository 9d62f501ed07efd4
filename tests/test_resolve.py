"""The MODEL resolver: every kind loads, yields the same logits, and bad input fails clearly."""

from __future__ import annotations

import pickle
import re
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.checkpoint import fingerprint, save_checkpoint
from pgaudit.models.detector import topk_mean
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig, get_preset
from pgaudit.models.resolve import load_detector

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "custom_detector"


def _same_logits(a: nn.Module, b: nn.Module, size: int) -> None:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


# --- pgaudit and official PatchGuard checkpoints


def test_pgaudit_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = PatchGuard(replace(get_preset("tiny"), image_size=32))
    path = save_checkpoint(tmp_path / "pg.pt", model, training={"epochs": 3})
    loaded = load_detector(str(path))
    assert (loaded.kind, loaded.name, loaded.trainable) == ("patchguard", "PatchGuard (tiny)", True)
    assert loaded.fingerprint == fingerprint(path)
    assert loaded.card["training"] == {"epochs": 3} and loaded.card["image_size"] == 32
    info = loaded.model_info()  # the results.json `model` section
    assert info["spec"] == str(path) and info["config"]["name"] == "tiny"
    _same_logits(model, loaded.detector, 32)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda p: p.pop("state_dict"), "without its 'state_dict'"),
        (lambda p: p.update(config="oops"), "'config' is a str, not a table"),
        (lambda p: p.update(state_dict=[1, 2]), "'state_dict' is a list"),
        (lambda p: p.update(training=[1]), "'training' is a list"),
        (lambda p: p["state_dict"].update(extra="text"), "holds non-tensors (extra)"),
        (lambda p: p["config"].update(image_size="big"), "its config does not build"),
        (
            lambda p: p["state_dict"].update(
                {k: v[:1] for k, v in p["state_dict"].items() if v.ndim}
            ),
            "the shape of",
        ),  # fmt: skip
    ],
    ids=[
        "no-weights",
        "config-str",
        "weights-list",
        "training-list",
        "non-tensor",
        "bad-config",
        "shapes",
    ],  # fmt: skip
)
def test_an_edited_checkpoint_is_one_sentence_not_a_traceback(tmp_path, run_cli, edit, words):
    """These used to end in KeyError / AttributeError / TypeError tracebacks (exit 1)."""
    torch.manual_seed(0)
    model = PatchGuard(replace(get_preset("tiny"), image_size=32))
    payload = torch.load(save_checkpoint(tmp_path / "pg.pt", model), weights_only=True)
    payload["state_dict"] = dict(payload["state_dict"])
    edit(payload)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(PgauditError, match=re.escape(words)):
        load_detector(tmp_path / "edited.pt")
    res = run_cli("attack", str(tmp_path / "edited.pt"), str(tmp_path), "--out",
                  str(tmp_path / "a"), "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2 and words.split(" (")[0] in res.stderr


@pytest.mark.parametrize(
    "backbone, feature_blocks, extra",
    [
        ("vit_small_patch14_dinov2", (2,), {}),
        # register tokens, two feature blocks, and a classifier head left in the file
        ("vit_small_patch14_reg4_dinov2", (1, 2), {"head.weight": torch.zeros(10, 384)}),
    ],
)
def test_official_state_dict(tmp_path, backbone, feature_blocks, extra):
    config = PatchGuardConfig(
        backbone=backbone,
        backbone_kwargs={"depth": 2},
        image_size=56,
        feature_blocks=feature_blocks,
        reg_blocks=(1, 2),
        dsc_hidden=64,
    )
    torch.manual_seed(0)
    model = PatchGuard(config).eval()
    state = dict(model.state_dict())  # this IS the official layout
    state.update({f"feature_extractor.pretrained_model.{k}": v for k, v in extra.items()})
    path = tmp_path / "patchguard_mvtec_bottle.pth"
    torch.save(state, path)

    loaded = load_detector(path)
    assert loaded.kind == "official-patchguard"
    assert loaded.name == "PatchGuard (official patchguard_mvtec_bottle)"
    assert loaded.trainable and isinstance(loaded.detector, PatchGuard)
    inferred = loaded.detector.config
    assert inferred.backbone == backbone and inferred.image_size == 56
    assert inferred.feature_blocks == feature_blocks and inferred.dsc_hidden == 64
    assert inferred.dsc_heads == 4 and inferred.reg_blocks == (1, 2)
    assert loaded.card["official"]["inferred"]["depth"] == 2
    _same_logits(model, loaded.detector, 56)

    with pytest.raises(ParameterError, match=r"^image_size 64: .* 56 px; drop image_size"):
        load_detector(path, image_size=64)


def test_official_pos_embed_for_another_grid_is_resampled(tmp_path):
    """A ViT stored for a larger input (as DINOv2's 518 px) runs on the discriminator's grid."""
    big = PatchGuard(
        PatchGuardConfig(backbone_kwargs={"depth": 1}, image_size=70, feature_blocks=(1,),
                         reg_blocks=(1,), dsc_hidden=32)
    )  # fmt: skip
    state = dict(big.state_dict())
    state["discriminator.positional_encodings"] = torch.zeros(16, 384)  # a 4x4 grid: 56 px
    torch.save({"state_dict": state}, tmp_path / "patchguard_visa_pcb1.pth")
    loaded = load_detector(tmp_path / "patchguard_visa_pcb1.pth")
    assert loaded.detector.image_size == 56
    assert "5x5 to 4x4" in loaded.card["official"]["pos_embed"]
    with torch.no_grad():
        assert loaded.detector(torch.rand(1, 3, 56, 56)).shape == (1, 4, 4)


# --- Python factories


USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    """conv 4x4/4 on a 16-px input: a 4x4 grid; ``shape`` picks the output form."""

    def __init__(self, shape, image_size=16):
        super().__init__()
        if image_size is not None:
            self.image_size = image_size
        self.shape = shape
        self.conv = nn.Conv2d(3, 2, 4, stride=4)

    def forward(self, x):
        y = self.conv(x)
        a = y[:, :1]
        if self.shape == "chan":
            return a
        if self.shape == "flat":
            return a.flatten(1)
        if self.shape == "dict":
            return {"anomaly_map": a[:, 0], "image_score": y[:, 1].mean(dim=(1, 2))}
        if self.shape == "two":
            return y
        if self.shape == "list":
            return [a]
        return a[:, 0]


def chan(): return Net("chan")
def flat(): return Net("flat")
def scored(): return Net("dict")
def two(): return Net("two")
def listed(): return Net("list")
def unsized(): return Net("grid", image_size=None)
def sized(image_size=16): return Net("grid", image_size=image_size)
def not_a_module(): return 3
instance = Net("grid")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"userdet_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    return name


@pytest.mark.parametrize("factory", ["chan", "flat", "scored", "sized", "instance"])
def test_python_factory_output_shapes(user_module, factory):
    loaded = load_detector(f"{user_module}:{factory}")
    assert loaded.kind == "python" and loaded.trainable
    assert loaded.fingerprint.startswith("sha256-weights:")  # of its weights: it has no file
    assert loaded.card["patch_grid"] == [4, 4] and loaded.card["differentiable"]
    with torch.no_grad():
        assert loaded.detector(torch.rand(3, 3, 16, 16)).shape == (3, 4, 4)


def test_dict_image_score_is_used_and_differentiable(user_module):
    detector = load_detector(f"{user_module}:scored").detector
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    output = detector.predict(x)
    logits, scores = output.logits, detector.scores(output)
    inner = detector.module
    expected = inner.conv(x)[:, 1].mean(dim=(1, 2))
    assert torch.allclose(scores, expected) and not torch.allclose(scores, topk_mean(logits))
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "factory, message",
    [
        ("two", r"returned a tensor of shape \[2, 2, 4, 4\] .* \[B,h,w\]"),
        ("listed", r"returned a list, but a detector must return anomaly logits"),
        ("unsized", r"no integer image size attribute: pass image_size"),
        ("not_a_module", r"returned a int, but it must return a torch.nn.Module"),
        ("missing", r"has no attribute 'missing'"),
    ],
)
def test_python_factory_errors(user_module, factory, message):
    with pytest.raises(PgauditError, match=message):
        load_detector(f"{user_module}:{factory}")


def test_python_factory_image_size_option(user_module):
    assert load_detector(f"{user_module}:unsized", image_size=16).detector.image_size == 16
    # a factory taking image_size= receives --image-size
    assert load_detector(f"{user_module}:sized", image_size=32).card["patch_grid"] == [8, 8]


def test_unknown_specs(tmp_path):
    with pytest.raises(PgauditError, match="not importable"):
        load_detector("no_such_package_xyz.mod:build")
    with pytest.raises(PgauditError, match="no such file"):
        load_detector(str(tmp_path / "missing.pt"))
    with pytest.raises(PgauditError, match="is a folder"):
        load_detector(str(tmp_path))


def test_example_custom_detector(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded = load_detector("mydetector.detectors:build", image_size=64)
    assert loaded.kind == "python" and loaded.trainable
    assert (
        loaded.card["patch_grid"] == [8, 8] and loaded.card["architecture"] == "ConvPatchDetector"
    )
    scored = load_detector("mydetector.detectors:build_scored")
    assert scored.card["own_image_score"] and scored.detector.image_size == 128


# --- TorchScript and pickles


def test_torchscript(tmp_path):
    torch.manual_seed(0)
    module = nn.Conv2d(3, 1, 4, stride=4)
    path = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.trace(module, torch.rand(1, 3, 16, 16)), str(path))
    with pytest.raises(ParameterError, match="pass image_size"):  # no Python attributes survive
        load_detector(path)
    loaded = load_detector(path, image_size=16)
    assert loaded.kind == "torchscript" and loaded.card["patch_grid"] == [4, 4]
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.detector(x), module(x)[:, 0])


def test_pickled_module_needs_trust_pickle(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 1, 4, stride=4))
    module.image_size = 16
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    with pytest.raises(ParameterError, match="pass trust_pickle only if"):
        load_detector(path)
    loaded = load_detector(path, trust_pickle=True)
    assert loaded.kind == "pickle" and loaded.card["patch_grid"] == [4, 4]


class _Malicious:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    if writer == "torch":
        torch.save({"weights": _Malicious(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Malicious(marker)))
    with pytest.raises(ParameterError, match="trust_pickle only if") as info:
        load_detector(path)
    assert not marker.exists()
    assert "\n" not in str(info.value)


def test_unknown_layout_lists_accepted_kinds(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, path)
    with pytest.raises(PgauditError, match=r"no layout pgaudit knows.*official PatchGuard.*Torch"):
        load_detector(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PgauditError, match="is not a PyTorch file"):
        load_detector(garbage)


def test_backbone_only_for_official(tmp_path, user_module):
    with pytest.raises(ParameterError, match="^backbone .* only applies .*; drop backbone"):
        load_detector(f"{user_module}:chan", backbone="vit_small_patch16_224")


# --- a user detector goes through the attack runner


def test_python_detector_is_attacked_by_the_quick_suite(tmp_path, synth_root, monkeypatch):
    from pgaudit.attacks.runner import run_audit
    from pgaudit.data.layouts import open_category

    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded = load_detector("mydetector.detectors:build", image_size=64)
    results = run_audit(
        loaded.detector,
        open_category(synth_root / "widget"),
        "quick",
        out_dir=tmp_path / "audit",
        progress=False,
        gallery_size=0,
        max_images=8,
        model_info=loaded.model_info(),
    ).to_json()
    assert results["model"]["kind"] == "python"
    assert {a["objective"] for a in results["attacks"]} == {"detection", "localization"}
    _assert_attacked(results, tmp_path / "audit", n_images=8)


def _metric(section: dict, name: str) -> float:
    value = section["metrics"][name]["value"]
    assert value is not None, section["metrics"][name]["reason"]
    return value


def _assert_attacked(results: dict, audit: Path, n_images: int) -> None:
    """Each attack lowers the metric it targets, the robust row too, on ``n_images`` images."""
    import numpy as np

    for entry in results["attacks"]:
        target = "image_auroc" if entry["objective"] == "detection" else "pixel_auroc"
        assert _metric(entry, target) < _metric(results["clean"], target), entry["id"]
    for name in ("image_auroc", "pixel_auroc"):
        assert _metric(results["robust"], name) < _metric(results["clean"], name), name
    data = results["data"]
    assert (data["n_test"], data["max_images"]) == (n_images, n_images)
    assert data["n_normal"] == data["n_anomalous"] == n_images // 2
    assert np.load(audit / "scores.npz")["labels"].shape == (n_images,)


def test_module_image_score_survives_pgd_restarts(user_module):
    """Regression: keeping the best restart per image must keep the module's own image score."""
    import warnings

    from pgaudit.attacks.execute import Attacker, BatchTarget
    from pgaudit.attacks.suites import build_suite

    detector = load_detector(f"{user_module}:scored").detector
    spec = next(
        s
        for s in build_suite("quick", image_size=16, steps=2, restarts=2).attacks
        if s.objective == "detection"
    )
    attacker = Attacker(detector, input_shape=(3, 16, 16), cells=16, device="cpu")
    x = torch.rand(4, 3, 16, 16)
    target = BatchTarget(labels=torch.tensor([0, 1, 0, 1]), grid_masks=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the top-k fallback would warn
        adv, output = attacker.run(spec, x, target)
        scores = detector.scores(output)
    with torch.no_grad():
        torch.testing.assert_close(scores, detector.module.conv(adv)[:, 1].mean(dim=(1, 2)))


def test_cli_attack_takes_the_resolver_options(tmp_path, synth_root, run_cli):
    """`attack` passes --image-size / --trust-pickle to the resolver; without them, one sentence."""
    torch.manual_seed(0)
    module = nn.Conv2d(3, 1, 8, stride=8)
    scripted = tmp_path / "detector.ts"
    torch.jit.save(torch.jit.trace(module, torch.rand(1, 3, 64, 64)), str(scripted))
    data = synth_root / "widget"
    common = ("--max-images", "4", "--quiet", "--bootstrap", "0")
    res = run_cli("attack", scripted, data, "--out", tmp_path / "a", *common)
    assert res.exit_code == 2 and "--image-size" in res.stderr
    res = run_cli("attack", scripted, data, "--out", tmp_path / "a", "--image-size", "64", *common)
    assert res.exit_code == 0, res.stderr
    _assert_resolved(tmp_path / "a", "torchscript", 64)

    pickled = tmp_path / "whole.pt"
    torch.save(nn.Conv2d(3, 1, 8, stride=8), pickled)
    res = run_cli("attack", pickled, data, "--out", tmp_path / "b", *common)
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr
    res = run_cli(
        "attack", pickled, data, "--out", tmp_path / "b", "--trust-pickle", "--image-size", "64",
        *common,
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    _assert_resolved(tmp_path / "b", "pickle", 64)


def _assert_resolved(audit: Path, kind: str, image_size: int) -> None:
    import json

    results = json.loads((audit / "results.json").read_text(encoding="utf-8"))
    assert results["model"]["kind"] == kind
    assert results["data"]["image_size"] == image_size
    assert results["data"]["n_test"] == 4
    assert results["model"]["card"]["patch_grid"] == [image_size // 8] * 2


def test_a_checkpoint_never_picks_the_code_that_runs(tmp_path, monkeypatch, run_cli):
    """A hardened Python detector's checkpoint names its factory; loading it imports and calls
    that function only when the user names the same one (or trusts the file). An edited spec of
    ``sys:exit`` once ended a CI audit with exit 0 and no output."""
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.checkpoint import read_torch_file, save_checkpoint, write_payload
    from pgaudit.models.resolve import load_detector

    (tmp_path / "plainmod.py").write_text(
        "import torch\n"
        "class D(torch.nn.Module):\n"
        "    image_size = 32\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 1, 4, stride=4)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)[:, 0]\n"
        "def build():\n"
        "    return D()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    make_synthetic_dataset(tmp_path / "data", size=32, n_train=2, n_test=4, categories=("widget",))
    save_checkpoint(tmp_path / "mine.pt", load_detector("plainmod:build").detector)
    evil = read_torch_file(tmp_path / "mine.pt")
    evil["spec"] = "sys:exit"
    write_payload(evil, tmp_path / "evil.pt")

    res = run_cli("attack", "evil.pt", "data/widget", "--device", "cpu")
    assert res.exit_code == 2
    text = " ".join(res.stderr.split())
    assert "holds the weights of the Python detector 'sys:exit'" in text
    assert "pass --factory sys:exit (or --trust-pickle)" in text
    res = run_cli("attack", "evil.pt", "data/widget", "--device", "cpu", "--factory",
                  "plainmod:build")  # fmt: skip
    assert res.exit_code == 2 and "'sys:exit'" in res.stderr  # another factory does not unlock it
    with pytest.raises(ParameterError) as caught:
        load_detector("mine.pt")
    assert caught.value.parameters == ("factory", "trust_pickle")
    assert load_detector("mine.pt", factory="plainmod:build").kind == "python"
    res = run_cli("attack", "mine.pt", "data/widget", "--device", "cpu", "--factory",
                  "plainmod:build", "--quiet", "--bootstrap", "0", "--steps", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
