"""Peak memory of `pgaudit attack --suite quick` on the tiny preset, and its growth with test-set size.

Attacks stream over the test set in batches, so peak RSS should barely grow when the test set
doubles (only the stored scores and patch-resolution logits grow). Each audit runs in its own
process; its peak RSS comes from the kernel (``ru_maxrss`` of the finished child).

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_mb(command: list[str]) -> float:
    """Run ``command`` in a fresh process and return its peak resident set size in MiB."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *command], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller test sets (25 and 50)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import torch

    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.checkpoint import save_checkpoint
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset

    small, large = (25, 50) if args.quick else (50, 100)
    pgaudit = [sys.executable, "-m", "pgaudit"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        model = save_checkpoint(root / "tiny.pt", PatchGuard(get_preset("tiny")))
        rss = {}
        for n in (small, large):
            make_synthetic_dataset(
                root / f"d{n}", size=128, n_train=4, n_test=n, categories=("widget",)
            )
            rss[n] = peak_rss_mb(
                [*pgaudit, "attack", str(model), str(root / f"d{n}" / "widget"), "--suite",
                 "quick", "--out", str(root / f"audit{n}"), "--quiet"]
            )  # fmt: skip
            print(f"attack --suite quick, tiny preset, {n} test images: peak RSS {rss[n]:.0f} MiB")
    print(f"METRIC attack_quick_peak_rss_{large}_images_mb {rss[large]:.0f} MiB  (reported)")
    print(
        f"METRIC attack_quick_rss_growth_{large}_over_{small} {rss[large] / rss[small]:.3f} ratio"
        "  (target close to 1.0: memory does not grow with the test set)"
    )


if __name__ == "__main__":
    main()
