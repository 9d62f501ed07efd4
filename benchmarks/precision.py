"""fp32 vs bf16 side by side: one hardening step on the official configuration, and an attack step.

1. **Hardening step**, the official code's configuration: ViT-Tiny/16 (12 blocks) at 128 px,
   feature block 12, regularised blocks 6/9/12, discriminator hidden 512, batch 16, PGD-10 on
   both halves (normal images and pseudo-anomalies), AdamW. One step = the FAPA batch, the
   attacks, the four-term forward/backward with the attention regulariser and the update; for
   pgaudit in fp32 and in bf16 (``TrainConfig.precision``), and, with ``--official-src DIR`` (a
   checkout of rohban-lab/PatchGuard and its requirements importable; not a dependency), the
   official ``train_model.train_step`` on one batch of the same images, in fp32.
2. **Attack step**, the ``tiny`` preset: native PGD-10 at 8/255 on both objectives (detection and
   localization), batch 16, crafted in fp32 and in bf16 (:class:`pgaudit.attacks.execute.Attacker`).

The runs take turns (round-robin) and the fastest of ``--repeats`` counts; time is process CPU
time divided by the threads (what a run takes on otherwise idle cores; another process's load
does not inflate it). Ends with ``METRIC`` lines. Run:

    .venv/bin/python benchmarks/precision.py [--quick] [--official-src DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

THREADS = 2
BATCH = 16
EPS = 8 / 255
TARGET_VS_OFFICIAL = 2.0
TARGET_ATTACK = 1.4


def official_config():
    """pgaudit's PatchGuardConfig of the official code's model at 128 px (ViT-Tiny/16)."""
    from pgaudit.models.presets import PatchGuardConfig, TrainConfig

    return PatchGuardConfig(
        name="official-tiny",
        backbone="vit_tiny_patch16_224",  # timm's ViT-Tiny: 12 blocks, 192 wide, 3 heads
        image_size=128,
        feature_blocks=(12,),
        reg_blocks=(6, 9, 12),
        dsc_hidden=512,
        train=TrainConfig(batch_size=BATCH, steps=10, eps=EPS, fapa_min_side=14, fapa_max_side=86),
    )


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / THREADS


def fastest(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` calls of each run, taking turns, after one warm-up call each."""
    for fn in runs.values():
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], cpu_seconds(fn))
    return best


def pgaudit_step(category, precision: str) -> Callable[[], object]:
    """One pgaudit hardening step (FAPA batch + train_step) in ``precision``, on fresh batches."""
    from dataclasses import replace

    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.fapa import FapaConfig
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.training.batches import BatchSpec, PseudoAnomalyBatches
    from pgaudit.training.loop import train_step

    config = official_config()
    recipe = replace(config.train, precision=precision)
    torch.manual_seed(0)
    model = PatchGuard(config).train()
    dataset = AnomalyDataset(category.train, config.image_size, cache=True)
    for i in range(len(dataset)):  # decode outside the timings (a later epoch's state)
        dataset[i]
    fapa = FapaConfig(recipe.fapa_min_side, recipe.fapa_max_side)
    maker = PseudoAnomalyBatches(dataset, model.grid, fapa, 0, 0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    counter = iter(range(10**6))

    def step() -> None:
        index = next(counter)
        items = tuple(int(i) for i in (np.arange(BATCH) + index * BATCH) % len(dataset))
        batch = maker[BatchSpec(0, index, items)]
        train_step(model, batch, recipe, optimizer, eps=EPS, rng=np.random.RandomState(index),
                   reg_weights=config.reg_weights)  # fmt: skip

    return step


def _accepting_extra_keywords(forward: Callable) -> Callable:
    """Current timm calls attention with more keywords than the official hook takes."""

    def call(x, attn_mask=None, **_ignored):
        return forward(x, attn_mask=attn_mask)

    return call


def official_step(source: Path, category) -> Callable[[], object]:
    """The official code's ``train_step`` on one batch of the same images (fp32)."""
    sys.path.insert(0, str(source))
    patchguard = importlib.import_module("patchguard")
    train_model = importlib.import_module("train_model")
    loss = importlib.import_module("loss")
    pseudo_anomaly = importlib.import_module("pseudo_anomaly")
    from pgaudit.data.dataset import AnomalyDataset

    args = SimpleNamespace(
        hf_path="vit_tiny_patch16_224", feature_layers=[12], reg_layers=[6, 9, 12],
        image_size=128, hidden_dim=512, dsc_layers=1, dsc_heads=4, adv_train=True,
        epsilon_train=EPS, step_train=10, use_tqdm=False, lr=8e-4,
    )  # fmt: skip
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = patchguard.PatchGuard(args, device)
    for index in set(args.feature_layers + args.reg_layers):
        attn = model.feature_extractor.pretrained_model.blocks[index - 1].attn
        attn.forward = _accepting_extra_keywords(attn.forward)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    criterion = loss.Loss("KL_divergence", device, model.num_patches)
    generator = pseudo_anomaly.AnomalyGenerator("mvtec", "wood", 0)  # FAPA sides 14..86 px
    dataset = AnomalyDataset(category.train, args.image_size, cache=True)
    images = torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(BATCH)]).float()
    foreground = torch.ones(BATCH, 1, args.image_size, args.image_size)
    batch = (images, torch.zeros(BATCH), torch.zeros(BATCH, 1, 128, 128), foreground)

    def step() -> None:
        train_model.train_step(model, generator, [batch], optimizer, criterion, True, device, args)

    return step


def attack_steps(precision: str) -> Callable[[], object]:
    """Native PGD-10 on both objectives of the tiny preset, batch 16, crafted in ``precision``."""
    from pgaudit.attacks.algorithms import make_attack
    from pgaudit.attacks.execute import Attacker, BatchTarget
    from pgaudit.attacks.suites import AttackSpec
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset

    torch.manual_seed(0)
    model = PatchGuard(get_preset("tiny")).eval().requires_grad_(False)
    size = model.image_size
    images = torch.rand(BATCH, 3, size, size)
    labels = torch.arange(BATCH) % 2
    masks = torch.zeros(BATCH, *model.grid)
    masks[labels == 1, 2:5, 2:5] = 1
    attacker = Attacker(model, precision=precision)
    attacks = [
        make_attack(AttackSpec("pgd", "native", "inf", EPS, 10, objective))
        for objective in ("detection", "localization")
    ]

    def run() -> None:
        for attack in attacks:
            attacker.run(attack, images, BatchTarget(labels, masks))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat (noisier)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--official-src", type=Path, default=None,
                        help="A checkout of rohban-lab/PatchGuard (with its requirements).")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    repeats = 1 if args.quick else args.repeats
    from pgaudit.data.layouts import open_category
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.precision import cpu_has_native_bf16

    print(f"CPU threads {THREADS}, native bf16: {cpu_has_native_bf16()}, torch "
          f"{torch.__version__}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(Path(tmp), size=128, n_train=48, n_test=2, categories=("widget",))
        category = open_category(Path(tmp) / "widget")
        runs = {"pgaudit fp32": pgaudit_step(category, "fp32"),
                "pgaudit bf16": pgaudit_step(category, "bf16")}  # fmt: skip
        if args.official_src is not None:
            runs["official fp32"] = official_step(args.official_src, category)
        step = fastest(runs, repeats)
    attack = fastest({"fp32": attack_steps("fp32"), "bf16": attack_steps("bf16")}, repeats)

    print("\nhardening step, official configuration (ViT-Tiny/16 x12, 128 px, batch 16, PGD-10):")
    for name, seconds in step.items():
        print(f"  {name:14} {seconds:6.2f} s  {BATCH / seconds:5.2f} img/s")
    print("attack step, tiny preset (native PGD-10 on both objectives, batch 16):")
    for name, seconds in attack.items():
        print(f"  {name:14} {seconds:6.2f} s")
    fp32, bf16 = step["pgaudit fp32"], step["pgaudit bf16"]
    print(f"METRIC harden_official_cfg_fp32_images_per_s {BATCH / fp32:.2f} img/s")
    print(f"METRIC harden_official_cfg_bf16_images_per_s {BATCH / bf16:.2f} img/s")
    print(f"METRIC harden_bf16_over_fp32_speedup {fp32 / bf16:.2f} ratio")
    if "official fp32" in step:
        official = step["official fp32"]
        print(f"METRIC harden_official_code_images_per_s {BATCH / official:.2f} img/s")
        print(f"METRIC harden_fp32_over_official_speedup {official / fp32:.2f} ratio")
        print(f"METRIC harden_bf16_over_official_speedup {official / bf16:.2f} ratio  "
              f"(target >= {TARGET_VS_OFFICIAL})")  # fmt: skip
    print(f"METRIC attack_bf16_over_fp32_speedup {attack['fp32'] / attack['bf16']:.2f} ratio  "
          f"(target >= {TARGET_ATTACK})")  # fmt: skip


if __name__ == "__main__":
    main()
