"""Several processes on one or more machines, through PyTorch's own engine (``torch.distributed``).

Two sides:

* the **launcher** (``nproc`` of the API, ``--nproc N`` of the CLI): :func:`launch` starts N
  workers of ``torch.distributed.run`` (torchrun's standalone mode, free port) running a module
  (:mod:`pgaudit.workers` runs a planned job); :func:`check_launch` refuses impossible requests
  before anything starts;
* the **workers** (started by that launcher or by ``torchrun -m pgaudit …``; the environment holds
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): :func:`worker_session` creates the default process
  group (NCCL on CUDA, gloo on the CPU) on the worker's device (``cuda:LOCAL_RANK``) and tears it
  down; :func:`rank`, :func:`world_size`, :func:`is_main` and the collectives
  (:func:`all_gather`, :func:`gather_to_main`, :func:`all_reduce_mean`) work in a single process
  too, where they are no-ops.

Code that shards work (``harden``, ``run_audit``) asks :func:`world_size`; it never creates the
process group itself, so Python API users may create it their own way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from pgaudit.devices import NO_GPU, resolve_device
from pgaudit.errors import ParameterError, PgauditError

#: Environment variables torchrun sets in every worker.
WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# ------------------------------------------------------------------------------------------------
# ranks


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting RANK and WORLD_SIZE)."""
    return all(name in os.environ for name in WORKER_ENV)


def active() -> bool:
    """True when the default process group exists (this process is one of several workers)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This worker's global rank (0 in a single process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of workers (1 in a single process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the worker that logs, prints and writes files (rank 0, or a single process)."""
    return rank() == 0


def local_rank() -> int:
    """This worker's rank on its machine (``LOCAL_RANK``; 0 in a single process)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() else 0


# ------------------------------------------------------------------------------------------------
# launcher


def check_launch(nproc: int, device: str, *, batch_size: int | None = None) -> None:
    """Refuse a ``--nproc`` that cannot run here (before any worker starts); a training
    ``batch_size`` must split evenly among the processes."""
    if nproc < 1:
        raise ParameterError(f"nproc {nproc} must be at least 1.", "nproc")
    if nproc > 1 and batch_size is not None and batch_size % nproc:
        raise ParameterError(
            f"batch_size {batch_size} cannot be split evenly among nproc {nproc} training "
            f"processes; use a multiple of {nproc}.",
            "batch_size", "nproc",
        )  # fmt: skip
    if launched() and nproc > 1:
        raise ParameterError(
            f"nproc {nproc}: this process was already started by torchrun, which chose the "
            "number of workers; drop nproc.",
            "nproc", "nproc",
        )  # fmt: skip
    if nproc == 1:
        return
    if device.startswith("cuda:"):
        raise ParameterError(
            f"device {device} pins one GPU, but nproc {nproc} starts several workers: use "
            "device cuda (worker i takes cuda:i).",
            "device", "nproc", "device",
        )  # fmt: skip
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if count == 0:
            raise ParameterError(NO_GPU.format(device="cuda"), "device", "device")
        if nproc > count:
            raise ParameterError(
                f"nproc {nproc}: this machine has {count} GPU(s), one per worker; use "
                f"nproc {count} or less (or device cpu).",
                "nproc", "nproc", "device",
            )  # fmt: skip
    elif device not in ("cpu", "auto"):
        raise ParameterError(f"device {device!r} is not known: use auto, cpu or cuda.", "device")


@contextlib.contextmanager
def _worker_threads(nproc: int) -> Iterator[None]:
    """Give each worker an equal share of the CPU cores (OMP_NUM_THREADS), unless set already."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a logger (torch's agent logs each worker failure; ours is one sentence)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class WorkerRefused(PgauditError):
    """A worker stopped on a user error (exit code 2); it said why (see :mod:`pgaudit.workers`)."""


def launch(args: Sequence[str], nproc: int, *, module: str = "pgaudit") -> None:
    """Run ``python -m MODULE ARGS`` as ``nproc`` workers on this machine (torchrun, standalone).

    Equivalent to ``torchrun --standalone --nproc-per-node NPROC -m MODULE ARGS``. Returns when
    every worker has finished. A failed worker stops the others; on a user error (exit code 2)
    this raises :class:`WorkerRefused`, otherwise :class:`ParameterError`.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    parsed = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--module", module, *args]
    )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with _worker_threads(nproc), _quiet_logger("torch.distributed.elastic"):
            run(parsed)
    except ChildFailedError as exc:
        first_rank, first = exc.get_first_failure()
        if first.exitcode == PgauditError.exit_code:
            raise WorkerRefused(f"worker {first_rank} refused the run.") from None
        raise ParameterError(
            f"nproc {nproc}: worker {first_rank} failed with exit code {first.exitcode} (its "
            "traceback is above); fix the cause and run the command again.",
            "nproc",
        ) from None


# ------------------------------------------------------------------------------------------------
# workers


def worker_device(device: str) -> torch.device:
    """This worker's device for ``--device``: ``cuda`` / ``auto`` → ``cuda:LOCAL_RANK``; ``cpu``."""
    if device == "cpu":
        return torch.device("cpu")
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(f"device {device!r} is not known: use auto, cpu or cuda.", "device")
    if not torch.cuda.is_available():
        if device == "auto":
            return torch.device("cpu")
        raise ParameterError(NO_GPU.format(device=device), "device", "device")
    workers_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device.startswith("cuda:"):
        if workers_here > 1 and torch.device(device).index != local_rank():
            raise ParameterError(
                f"device {device} pins one GPU, but {workers_here} workers run on this machine: "
                "use device cuda (worker i takes cuda:i).",
                "device", "device",
            )  # fmt: skip
        return torch.device(device)
    index, count = local_rank(), torch.cuda.device_count()
    if index >= count:
        raise ParameterError(
            f"device {device}: worker {index} on this machine has no GPU of its own ({count} "
            f"GPU(s)); start at most {count} workers per machine.",
            "device",
        )
    return torch.device("cuda", index)


@contextlib.contextmanager
def worker_session(device: str, *, final_barrier: bool = True) -> Iterator[torch.device]:
    """The device to run on, inside the default process group when this is a torchrun worker.

    In a worker: create the group (NCCL for CUDA, gloo for the CPU), pin ``cuda:LOCAL_RANK``, and
    on exit wait for every worker (``final_barrier``) and destroy the group. Workers other than
    rank 0 exit quietly on a :class:`PgauditError` (every worker meets the same one; rank 0 prints
    it). Outside a worker: the resolved device, nothing else.
    """
    if not launched():
        yield resolve_device(device)
        return
    dev = worker_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not active():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None
        )
    try:
        yield dev
        if final_barrier:
            barrier()
    except PgauditError as exc:
        if not is_main():
            raise SystemExit(exc.exit_code) from None
        raise
    finally:
        if active():
            dist.destroy_process_group()


@contextlib.contextmanager
def session_or_launcher(
    device: str, nproc: int, *, final_barrier: bool = True
) -> Iterator[torch.device | str]:
    """:func:`worker_session` for a run in this process (``nproc`` 1, or a torchrun worker);
    for ``nproc`` > 1 this process only launches the workers: ``device`` as given, for them."""
    if nproc > 1:
        yield device
        return
    with worker_session(device, final_barrier=final_barrier) as dev:
        yield dev


def barrier() -> None:
    """Wait for every worker (no-op in a single process)."""
    if not active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every worker's ``obj`` (picklable), in rank order, on every worker."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every worker's ``obj`` in rank order on rank 0; ``None`` on the other ranks."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean over workers of each value (one collective; identity in a single process)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, tensor.tolist(), strict=True)}
