"""Cost of one attack step relative to one forward+backward pass of the model.

PatchGuard ``tiny`` (a ViT-Tiny-like detector, 128 px, random weights), batch 16, weights frozen as
during an audit. The reference is one forward pass plus one backward pass to the input (the least
any gradient attack step needs), timed as ``steps`` of them in a row; a PGD run of ``steps`` steps is timed end to end (random start,
projections, and for ART its numpy round trips and the two extra forward passes of its success-rate
log line) and divided by ``steps``. Runs take turns; best of ``repeats`` each; ends with
``METRIC`` lines.

    .venv/bin/python benchmarks/attack_step.py [--quick] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from pgaudit.attacks.art_bridge import ArtBridge
from pgaudit.attacks.native import pgd
from pgaudit.attacks.objectives import objective_values
from pgaudit.attacks.suites import AttackSpec
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import get_preset

BATCH = 16
EPS = 8 / 255
TARGET_NATIVE = 1.05
TARGET_ART = 1.20


def best_times(
    fns: list[Callable[[], object]],
    repeats: int,
    sync: Callable[[], None],
    clock: Callable[[], float],
) -> list[float]:
    """Fastest of ``repeats`` calls of each function, in seconds, after one warm-up call each.

    The functions take turns (round-robin), so a burst of load elsewhere hits them alike.
    """
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
        sync()
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            sync()
            best[i] = min(best[i], clock() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 steps, 2 repeats (noisier)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, repeats = (5, 2) if args.quick else (10, 3)
    device = torch.device(args.device)
    # CPU: process CPU time, which load from other processes on a shared machine does not
    # inflate; CUDA: wall time after synchronising.
    if device.type == "cuda":
        sync, clock, clock_name = torch.cuda.synchronize, time.perf_counter, "wall time"
    else:
        sync, clock, clock_name = (lambda: None), time.process_time, "process CPU time"

    torch.manual_seed(0)
    model = PatchGuard(get_preset("tiny")).to(device).eval()
    model.requires_grad_(False)
    size = model.image_size
    images = torch.rand(BATCH, 3, size, size, device=device)
    labels = torch.arange(BATCH, device=device) % 2
    print(
        f"PatchGuard tiny, {size} px, batch {BATCH}, {steps} steps, best of {repeats}, "
        f"{device}, {torch.get_num_threads()} threads, {clock_name}",
        flush=True,
    )

    def fwd_bwd() -> None:
        x = images.clone().requires_grad_(True)
        torch.autograd.grad(model(x).sum(), x)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return objective_values(model, model.predict(x), "detection", labels, None)

    spec = AttackSpec("pgd", "art", "inf", EPS, steps, "detection")
    bridge = ArtBridge(model, input_shape=(3, size, size), cells=64, device=device)

    def native_run() -> None:
        pgd(objective, images, eps=EPS, steps=steps, rng=np.random.RandomState(0))

    def art_run() -> None:
        np.random.seed(0)
        bridge.generate(spec, images, labels, None, threshold=0.0)

    def reference_run() -> None:
        for _ in range(steps):
            fwd_bwd()

    reference, native, art = (
        t / steps for t in best_times([reference_run, native_run, art_run], repeats, sync, clock)
    )
    print(f"forward+backward {reference * 1e3:.1f} ms")
    print(f"native PGD step  {native * 1e3:.1f} ms")
    print(f"ART PGD step     {art * 1e3:.1f} ms")
    print(f"METRIC fwd_bwd_ms {reference * 1e3:.2f} ms")
    print(
        f"METRIC pgd_step_over_fwd_bwd {native / reference:.3f} ratio  (target <= {TARGET_NATIVE})"
    )
    print(f"METRIC art_pgd_step_over_fwd_bwd {art / reference:.3f} ratio  (target <= {TARGET_ART})")


if __name__ == "__main__":
    main()
