"""Keeping clean accuracy: held-out validation, the selection rule, EMA weights, TRADES, resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from small_models import SMALL

import pgaudit.training.loop as loop
from pgaudit.data.layouts import open_category
from pgaudit.data.records import Category
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.errors import ParameterError
from pgaudit.models.checkpoint import read_torch_file
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import TrainConfig
from pgaudit.training.ema import WeightAverage
from pgaudit.training.loop import eps_at, harden
from pgaudit.training.loss import patch_kl
from pgaudit.training.validation import Selection, select_epoch, split_validation

RECIPE = TrainConfig(
    epochs=3, batch_size=8, lr=1e-3, steps=1, eps_warmup_epochs=0, fapa_max_side=60,
    val_fraction=0.25, val_steps=1, select=True, ema_decay=0.9,
)  # fmt: skip


@pytest.fixture(scope="module")
def widget(tmp_path_factory) -> Category:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, size=64, n_train=20, n_test=10, categories=("widget",))
    return open_category(root / "widget")


def _model(seed: int = 0) -> PatchGuard:
    torch.manual_seed(seed)
    return PatchGuard(SMALL)


def test_validation_split_is_disjoint_deterministic_and_bounded() -> None:
    for n, fraction in ((60, 0.15), (20, 0.25), (3, 0.1), (2, 0.5)):
        train, held = split_validation(n, fraction, seed=4)
        assert sorted(train + held) == list(range(n)) and not set(train) & set(held)
        assert len(held) >= 2 or n < 3 and len(held) == 1 and train
        assert split_validation(n, fraction, seed=4) == (train, held)
    assert split_validation(60, 0.15, 4)[1] != split_validation(60, 0.15, 5)[1]
    assert split_validation(10, 0.0, 1) == (list(range(10)), [])


def test_harden_never_trains_on_the_held_out_images(widget, monkeypatch) -> None:
    seen: list[str] = []
    original = loop.batch_loader

    def spy(dataset, *args, **kwargs):
        seen.extend(s.image.name for s in dataset.samples)
        return original(dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "batch_loader", spy)
    result = harden(_model(), widget, replace(RECIPE, epochs=1), seed=2, device="cpu")
    held = {widget.train[i].image.name for i in split_validation(20, 0.25, 2)[1]}
    assert len(seen) == 15 and len(held) == 5 and not held & set(seen)
    assert result.validation["held_out_images"] == 5


PLANTED = [  # clean, robust per epoch
    {"epoch": 1, "clean": 0.70, "robust": 0.10},
    {"epoch": 2, "clean": 0.95, "robust": 0.30},
    {"epoch": 3, "clean": 0.99, "robust": 0.35},
    {"epoch": 4, "clean": 0.96, "robust": 0.60},  # best robust, but 0.03 below the best clean
    {"epoch": 5, "clean": 0.975, "robust": 0.50},
    {"epoch": 6, "clean": 0.98, "robust": 0.50},  # ties epoch 5 on robust with a higher clean
]


def test_selection_rule_on_a_planted_history() -> None:
    assert select_epoch(PLANTED, margin=0.02, robust=True) == 6
    assert select_epoch(PLANTED, margin=0.05, robust=True) == 4
    assert select_epoch(PLANTED, margin=0.0, robust=True) == 3
    assert select_epoch(PLANTED, margin=0.02, robust=False) == 3
    assert select_epoch([], margin=0.02, robust=True) is None
    tie = [{"epoch": 1, "clean": 0.9, "robust": 0.4}, {"epoch": 2, "clean": 0.9, "robust": 0.4}]
    assert select_epoch(tie, margin=0.0, robust=True) == 2


def test_selection_keeps_the_weights_the_rule_can_still_pick() -> None:
    selection = Selection(margin=0.02, robust=True)
    for h in PLANTED:
        selection.offer(h["epoch"], {"clean": h["clean"], "robust": h["robust"]},
                        {"w": torch.full((2,), float(h["epoch"]))})  # fmt: skip
        assert selection.chosen() in selection.weights
    # 1, 2 and 5 are dominated (another epoch is at least as clean and more robust)
    assert set(selection.weights) == {3, 4, 6}
    assert selection.weights[6]["w"][0] == 6


def test_weight_average_follows_its_formula() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.9)
    expected = 0.0
    for step in range(1, 30):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(model)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * step
    assert torch.allclose(ema.state["weight"], torch.full((1, 2), expected))


def test_checkpoint_holds_the_kept_weights_and_records_validation(
    widget, tmp_path, monkeypatch
) -> None:
    averages: list[WeightAverage] = []
    init = WeightAverage.__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        averages.append(self)

    monkeypatch.setattr(WeightAverage, "__init__", keep)
    ema_only = replace(RECIPE, select=False)
    result = harden(_model(), widget, ema_only, out=tmp_path / "e.pt", seed=1, device="cpu")
    saved = read_torch_file(tmp_path / "e.pt")
    for key, value in averages[0].state.items():
        assert torch.equal(saved["state_dict"][key], value)
        assert torch.equal(result.model.state_dict()[key], value)
    raw = harden(_model(), widget, replace(ema_only, ema_decay=0.0), seed=1, device="cpu")
    assert any(not torch.equal(raw.model.state_dict()[k], v) for k, v in averages[0].state.items())

    selected = harden(_model(), widget, RECIPE, out=tmp_path / "s.pt", seed=1, device="cpu")
    saved = read_torch_file(tmp_path / "s.pt")
    summary = saved["training"]["validation"]
    assert summary["selected"] and summary == selected.validation
    history = [{"epoch": r["epoch"], "clean": r["val_clean"], "robust": r["val_robust"]}
               for r in selected.history]  # fmt: skip
    assert summary["epoch"] == select_epoch(history, RECIPE.select_margin, robust=True)
    assert len(saved["training"]["validation_images"]) == 5
    log = (tmp_path / "s.log.jsonl").read_text().splitlines()
    assert len(log) == 3 and all('"val_clean"' in line and '"val_robust"' in line for line in log)


def test_resume_is_exact_with_ema_and_selection(widget, tmp_path) -> None:
    straight = harden(_model(), widget, RECIPE, out=tmp_path / "a.pt", seed=3, device="cpu")
    calls = {"n": 0}

    def stop_after_two(record):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harden(_model(), widget, RECIPE, out=tmp_path / "c.pt", seed=3, device="cpu",
               on_epoch=stop_after_two)  # fmt: skip
    resumed = harden(_model(seed=9), widget, RECIPE, out=tmp_path / "c.pt", seed=3,
                     device="cpu", resume=True)  # fmt: skip
    assert resumed.start_epoch == 2
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.validation == straight.validation


def test_trades_term_is_a_kl_and_bad_settings_are_refused(widget) -> None:
    logits = torch.randn(3, 4, 4)
    assert patch_kl(logits, logits).abs().item() < 1e-6
    assert patch_kl(logits, logits + 1).item() > 0
    model = _model()
    result = harden(model, widget, replace(RECIPE, epochs=1, trades_beta=2.0, select=False,
                                           val_fraction=0.0), device="cpu")  # fmt: skip
    assert {"bce_clean", "bce_adv", "bce_fapa", "bce_fapa_adv"} <= set(result.history[0])
    with pytest.raises(ParameterError, match="^select needs held-out images: set val_fraction"):
        replace(RECIPE, val_fraction=0.0)  # the Python API names parameters, not options
    with pytest.raises(ParameterError, match="^ema_decay 1: use 0"):
        replace(RECIPE, ema_decay=1.0)
    with pytest.raises(ParameterError, match="^trades_beta -1 must be 0 or more"):
        replace(RECIPE, trades_beta=-1.0)


def test_cli_harden_of_an_existing_detector_takes_the_same_options(widget, run_cli, tmp_path):
    first = tmp_path / "m.pt"
    res = run_cli("train", widget.root, "--out", first, "--epochs", "1", "--clean",
                  "--device", "cpu", "--workers", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "h.pt"
    res = run_cli("harden", first, widget.root, "--out", out, "--epochs", "2", "--steps", "1",
                  "--ema-decay", "0.9", "--val-fraction", "0.25", "--select",
                  "--trades-beta", "0.5", "--clean-epochs", "1", "--device", "cpu",
                  "--workers", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    training = read_torch_file(out)["training"]
    recipe = training["recipe"]
    assert (recipe["ema_decay"], recipe["val_fraction"], recipe["select"]) == (0.9, 0.25, True)
    assert recipe["trades_beta"] == 0.5 and recipe["adversarial"]
    assert recipe["clean_epochs"] == 1
    val = training["validation"]
    assert val["selected"] and val["held_out_images"] == 5 and val["epoch"] == 2
    assert f"clean {val['clean']:.3f}, robust {val['robust']:.3f}" in res.stdout
    assert "held-out validation (5 normal images" in res.stdout
    res = run_cli("harden", first, widget.root, "--out", tmp_path / "x.pt", "--select",
                  "--val-fraction", "0", "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2
    assert "--select needs held-out images: set --val-fraction above 0." in res.stderr
    res = run_cli("harden", first, widget.root, "--out", tmp_path / "x.pt", "--epochs", "2",
                  "--clean-epochs", "2", "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2
    assert "--clean-epochs 2 leaves no adversarial epoch of --epochs 2; use a value" in res.stderr


def test_a_clean_start_trains_clean_then_hardens_and_selects_only_hardened_epochs(
    widget, monkeypatch
) -> None:
    recipe = replace(RECIPE, epochs=3, clean_epochs=2, eps_warmup_epochs=1, select_margin=1.0)
    spe = 4
    assert [eps_at(recipe, s, spe) for s in (0, 7)] == [0.0, 0.0]
    assert eps_at(recipe, 8, spe) == pytest.approx(recipe.eps / spe)
    assert eps_at(recipe, 11, spe) == pytest.approx(recipe.eps)
    planted = iter([0.9, 0.8, 0.1])  # robust validation scores: the clean epochs look best
    real_validate = loop.validate

    def planted_validate(*args, **kwargs):
        return {**real_validate(*args, **kwargs), "clean": 0.5, "robust": next(planted)}

    monkeypatch.setattr(loop, "validate", planted_validate)
    result = harden(_model(), widget, recipe, device="cpu", seed=1)
    monkeypatch.undo()
    assert [h["eps"] for h in result.history][:2] == [0.0, 0.0] and result.history[2]["eps"] > 0
    assert "bce_adv" not in result.history[0] and "bce_adv" in result.history[2]
    assert result.validation["epoch"] == 3  # the clean epochs are validated, never kept
    with pytest.raises(ParameterError, match="^clean_epochs 3 leaves no adversarial epoch of ep"):
        replace(recipe, clean_epochs=3)
    clean_run = harden(_model(), widget, replace(recipe, adversarial=False, clean_epochs=3),
                       device="cpu", seed=1)  # fmt: skip
    assert clean_run.validation["selected"]  # a --clean run ignores the clean start


def test_a_resumed_clean_start_keeps_the_saved_clean_phase(widget, tmp_path, monkeypatch) -> None:
    """Interrupted inside its clean phase, a run resumed with another recipe still skips the
    clean epochs in selection: the saved recipe wins, its clean_epochs included."""
    recipe = replace(RECIPE, clean_epochs=2)
    straight = harden(_model(), widget, recipe, out=tmp_path / "a.pt", seed=3, device="cpu")

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harden(_model(), widget, recipe, out=tmp_path / "c.pt", seed=3, device="cpu",
               on_epoch=stop)  # fmt: skip
    offered: list[int] = []
    offer = Selection.offer
    monkeypatch.setattr(
        Selection, "offer", lambda self, e, *a: (offered.append(e), offer(self, e, *a))
    )
    resumed = harden(_model(seed=9), widget, replace(recipe, clean_epochs=0),
                     out=tmp_path / "c.pt", seed=3, device="cpu", resume=True)  # fmt: skip
    assert resumed.start_epoch == 1
    assert offered == [3]  # epoch 2 was still clean: never a candidate
    assert resumed.validation == straight.validation
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
