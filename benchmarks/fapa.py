"""FAPA generation speed on one CPU thread (images per second, batches of 16).

Images of a centred object (a textured disc on a plain background) with its foreground mask; all
corruption levels in their default mix. NumPy, OpenBLAS and torch run on one thread, so the
process CPU time is the time of that thread: the ``METRIC`` figures are images per CPU-second
(equal to wall-clock images/s on an idle machine, and not skewed by other processes on a shared
one). The wall-clock rate and the load average are printed alongside.

    .venv/bin/python benchmarks/fapa.py [--quick]
"""

from __future__ import annotations

import os

# One thread everywhere, set before NumPy / torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pgaudit.fapa import FapaConfig, make_pseudo_anomalies  # noqa: E402

TARGETS = {224: 650.0, 128: 800.0}
BATCH = 16


def centred_object(size: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured disc (radius 0.35 of the side) on a plain background, and its foreground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2).astype(np.float32)
    texture = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    images = np.empty((batch, 3, size, size), dtype=np.float32)
    for channel, background in enumerate((0.15, 0.2, 0.25)):
        images[:, channel] = background + disc * (texture - background)
    images += rng.normal(0.0, 0.02, images.shape).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    foreground = np.repeat(disc[None], batch, axis=0)
    return torch.from_numpy(images), torch.from_numpy(foreground)


def images_per_second(
    size: int, batches: int, repeats: int, config: FapaConfig
) -> tuple[float, float]:
    """Best ``(per CPU-second, per wall-second)`` rates over ``repeats`` runs of ``batches``
    batches, after one warm-up batch."""
    images, foreground = centred_object(size, BATCH)
    rng = np.random.default_rng(0)
    make_pseudo_anomalies(images, foreground, rng, config)
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(batches):
            make_pseudo_anomalies(images, foreground, rng, config)
        count = batches * BATCH
        best_cpu = max(best_cpu, count / (time.process_time() - cpu))
        best_wall = max(best_wall, count / (time.perf_counter() - wall))
    return best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches (noisier)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches, repeats = (8, 3) if args.quick else (40, 5)
    config = FapaConfig()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"FAPA, batch {BATCH}, 1 thread, {batches} batches x {repeats} repeats, load {load:.2f}")
    results = {}
    for size in TARGETS:
        results[size], wall = images_per_second(size, batches, repeats, config)
        print(
            f"  {size}x{size}: {results[size]:8.1f} images/s per CPU-second, {wall:8.1f} wall-clock"
        )
    for size, target in TARGETS.items():
        print(
            f"METRIC fapa_{size}_images_per_s {results[size]:.1f} img/s  (target >= {target:.0f})"
        )


if __name__ == "__main__":
    main()
