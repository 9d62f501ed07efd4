"""Hardening throughput per preset on the CPU: images/s of one training step, and where time goes.

One step = a FAPA batch (16 normal images + their pseudo-anomalies), PGD-10 on both halves with
frozen weights, then the four-term training forward/backward with the attention regulariser and
the AdamW update. Run: ``.venv/bin/python benchmarks/harden_step.py [--quick]``.

The CPU may be shared; besides wall time the script prints the process CPU time divided by the
thread count (what the step would take on otherwise idle cores) and the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

THREADS = 2
TARGET = {"tiny": 3.0}


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def measure(preset: str, data: Path, steps: int, pgd_steps: int, batch: int) -> dict[str, float]:
    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.data.layouts import open_category
    from pgaudit.fapa import FapaConfig
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset
    from pgaudit.training.batches import BatchSpec, PseudoAnomalyBatches
    from pgaudit.training.loop import train_step

    config = get_preset(preset)
    recipe = replace(config.train, steps=pgd_steps, batch_size=batch)
    torch.manual_seed(0)
    model = PatchGuard(config).train()
    category = open_category(data)
    dataset = AnomalyDataset(category.train, config.image_size, cache=True)
    maker = PseudoAnomalyBatches(
        dataset, model.grid, FapaConfig(recipe.fapa_min_side, recipe.fapa_max_side), 0, 0.05
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    for i in range(batch):  # fill the image cache outside the timings (a later epoch's state)
        dataset[i]
    rows = []
    for index in range(steps + 1):  # the first step warms up allocators and is not counted
        spec = BatchSpec(0, index, tuple((np.arange(batch) + index * batch) % len(dataset)))
        b, fapa_w, fapa_c = _timed(lambda spec=spec: maker[spec])
        parts = train_step(
            model,
            b,
            recipe,
            optimizer,
            eps=recipe.eps,
            rng=np.random.RandomState(index),
            reg_weights=config.reg_weights if recipe.regularise else None,
        )
        if index:
            rows.append((fapa_w, parts["attack_s"], parts["update_s"], fapa_c,
                         parts["attack_cpu_s"], parts["update_cpu_s"]))  # fmt: skip
    fapa_w, att_w, upd_w, fapa_c, att_c, upd_c = np.mean(rows, axis=0)
    wall = fapa_w + att_w + upd_w
    cpu_wall = (fapa_c + att_c + upd_c) / THREADS
    return {
        "images_per_s": batch / wall,
        "images_per_s_cpu": batch / cpu_wall,
        "fapa": fapa_w / wall,
        "attack": att_w / wall,
        "update": upd_w / wall,
        "step_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="One measured step per preset.")
    parser.add_argument("--presets", default="tiny,lite")
    parser.add_argument("--steps", type=int, default=None, help="Measured steps per preset.")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    from pgaudit.data.synth import make_synthetic_dataset

    steps = args.steps or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(Path(tmp), size=128, n_train=max(32, args.batch), n_test=2,
                               categories=("widget",))  # fmt: skip
        print(f"CPU threads {THREADS}, batch {args.batch}, PGD-{args.pgd_steps}, "
              f"load average at start {os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'preset':8} {'img/s':>7} {'img/s(cpu)':>10} {'step s':>7} "
              f"{'FAPA':>6} {'attack':>7} {'update':>7}")  # fmt: skip
        results = {}
        for preset in args.presets.split(","):
            r = measure(preset, Path(tmp) / "widget", steps, args.pgd_steps, args.batch)
            results[preset] = r
            print(f"{preset:8} {r['images_per_s']:7.2f} {r['images_per_s_cpu']:10.2f} "
                  f"{r['step_s']:7.2f} {r['fapa']:6.1%} {r['attack']:7.1%} {r['update']:7.1%}")  # fmt: skip
        print(f"load average at end {os.getloadavg()[0]:.1f} (img/s(cpu) = batch / (CPU time / "
              f"{THREADS}): the figure on otherwise idle cores)")  # fmt: skip
        for preset, r in results.items():
            target = f"  (target >= {TARGET[preset]})" if preset in TARGET else ""
            print(f"METRIC harden_{preset}_images_per_s {r['images_per_s']:.2f} img/s{target}")
            print(f"METRIC harden_{preset}_images_per_s_cpu_time {r['images_per_s_cpu']:.2f} img/s")


if __name__ == "__main__":
    main()
