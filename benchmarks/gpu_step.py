"""fp32 vs bf16 on a GPU: the ``paper`` preset's hardening step and attack images/s.

1. **Hardening step**: the ``paper`` preset (ViT-S/14 DINOv2 architecture at 224 px, random
   weights: none can be downloaded here; speed does not depend on them), batch 16 normal images
   + 16 pseudo-anomalies, PGD-10 on both halves, the four-term loss with the attention
   regulariser and the AdamW update (:func:`pgaudit.training.loop.train_step`), in fp32 and bf16.
2. **Attack**: native PGD-10 at 8/255 on the detection objective, batch 32, crafted in fp32 and
   bf16 (:class:`pgaudit.attacks.execute.Attacker`); images/s.

Wall time after warm-up with the device synchronised; runs take turns, the fastest of
``--repeats`` counts. Ends with ``METRIC`` lines. Run (on a CUDA machine):

    python benchmarks/gpu_step.py [--preset paper] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

EPS = 8 / 255


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def seconds(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return seconds


def harden_step(preset: str, precision: str, batch: int, device: torch.device):
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset
    from pgaudit.training.loop import train_step

    config = get_preset(preset)
    recipe = replace(config.train, precision=precision, steps=10, adversarial=True)
    torch.manual_seed(0)
    model = PatchGuard(config).to(device).train()
    size, (h, w) = config.image_size, model.grid
    images = torch.rand(batch, 3, size, size, device=device)
    anomalies = images.clone()
    anomalies[:, :, : size // 4, : size // 4] = torch.rand_like(
        anomalies[:, :, : size // 4, : size // 4]
    )
    labels = torch.zeros(batch, h, w, device=device)
    labels[:, : max(1, h // 4), : max(1, w // 4)] = 1
    data = {"images": images, "anomalies": anomalies, "labels": labels,
            "indices": torch.arange(batch)}  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    counter = iter(range(10**6))

    def step() -> None:
        train_step(model, data, recipe, optimizer, eps=EPS,
                   rng=np.random.RandomState(next(counter)), reg_weights=config.reg_weights)  # fmt: skip

    return step


def attack_run(preset: str, precision: str, batch: int, device: torch.device):
    from pgaudit.attacks.algorithms import make_attack
    from pgaudit.attacks.execute import Attacker, BatchTarget
    from pgaudit.attacks.suites import AttackSpec
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset

    torch.manual_seed(0)
    model = PatchGuard(get_preset(preset)).to(device).eval().requires_grad_(False)
    size, (h, w) = model.image_size, model.grid
    images = torch.rand(batch, 3, size, size, device=device)
    labels = torch.arange(batch, device=device) % 2
    masks = torch.zeros(batch, h, w, device=device)
    masks[labels == 1, : max(1, h // 4), : max(1, w // 4)] = 1
    attacker = Attacker(model, precision=precision)
    attack = make_attack(AttackSpec("pgd", "native", "inf", EPS, 10, "detection"))
    return lambda: attacker.run(attack, images, BatchTarget(labels, masks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="Hardening batch (x2 with FAPA).")
    parser.add_argument("--attack-batch", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, preset {args.preset}")
    seconds = timer(device)
    runs = {
        f"harden {p}": harden_step(args.preset, p, args.batch, device) for p in ("fp32", "bf16")
    }
    runs |= {f"attack {p}": attack_run(args.preset, p, args.attack_batch, device)
             for p in ("fp32", "bf16")}  # fmt: skip
    for fn in runs.values():  # warm-up (kernels chosen, caches filled)
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for key, fn in runs.items():
            best[key] = min(best[key], seconds(fn))
    for key, s in best.items():
        n = 2 * args.batch if key.startswith("harden") else args.attack_batch
        print(f"  {key:12} {s * 1000:8.1f} ms  {n / s:8.1f} img/s")
    for kind, n in (("harden", 2 * args.batch), ("attack", args.attack_batch)):
        for p in ("fp32", "bf16"):
            print(f"METRIC gpu_{kind}_{args.preset}_{p}_images_per_s {n / best[f'{kind} {p}']:.1f}")
        print(f"METRIC gpu_{kind}_bf16_over_fp32_speedup "
              f"{best[f'{kind} fp32'] / best[f'{kind} bf16']:.2f} ratio")  # fmt: skip


if __name__ == "__main__":
    main()
