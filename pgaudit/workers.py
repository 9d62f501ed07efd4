"""Run a planned audit or hardening run as N worker processes (``nproc`` of the API and the CLI).

The caller plans the run in its own process (so a bad model, data folder or option is refused
before anything starts), then :func:`run_in_workers` writes the plan's arguments to a job file and
starts ``python -m pgaudit.workers JOB`` as N workers of ``torch.distributed.run``
(:func:`pgaudit.runtime.distributed.launch`). Each worker opens the process group, makes the same
plan and runs its share; rank 0 writes the files (and, for a hardening run, ``result.json`` with
what :class:`~pgaudit.training.loop.HardenResult` holds besides the model). A user error in a
worker is written by rank 0 to ``error.json`` and raised again in the caller, unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.runtime import distributed

KINDS = ("audit", "harden")


def run_in_workers(kind: str, job: dict[str, Any], nproc: int) -> dict[str, Any] | None:
    """Run the ``kind`` job (the keyword arguments of its plan, ``"run"``: of its run) in
    ``nproc`` workers; returns rank 0's ``result.json`` (hardening) or None."""
    with tempfile.TemporaryDirectory(prefix="pgaudit-job-") as tmp:
        folder = Path(tmp)
        (folder / "job.json").write_text(json.dumps({"kind": kind, **job}))
        try:
            distributed.launch([str(folder / "job.json")], nproc, module="pgaudit.workers")
        except distributed.WorkerRefused:
            raise _error_from(folder / "error.json") from None
        result = folder / "result.json"
        return json.loads(result.read_text()) if result.exists() else None


def _error_from(path: Path) -> PgauditError:
    if not path.exists():  # pragma: no cover - a worker exited 2 without a pgaudit error
        return PgauditError("a worker refused the run; its message is above.")
    error = json.loads(path.read_text())
    if error["parameters"] is not None:
        return ParameterError(error["message"], *error["parameters"])
    return PgauditError(error["message"])


def _run(job: dict[str, Any], folder: Path) -> None:
    from rich.console import Console

    from pgaudit import api

    run = job["run"]
    with distributed.worker_session(run["device"], final_barrier=job["kind"] == "harden") as dev:
        main = distributed.is_main()
        if job["kind"] == "audit":
            plan = api.plan_audit(**job["plan"], device=str(dev))
            plan.run(progress=run["progress"] and main, command=run.get("command"),
                     console=Console(stderr=True))  # fmt: skip
            return
        from pgaudit.models.presets import TrainConfig

        arguments = {**job["plan"], "recipe": TrainConfig(**job["plan"]["recipe"])}
        plan = api.plan_hardening(**arguments)
        result = plan.run(device=str(dev), progress=run["progress"])
        if main:
            record = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "model"}
            record["train_config"] = asdict(result.train_config)
            for key in ("checkpoint", "log"):
                record[key] = str(record[key]) if record[key] is not None else None
            (folder / "result.json").write_text(json.dumps(record))


def main(argv: list[str] | None = None) -> None:
    """``python -m pgaudit.workers JOB``: one worker (started by :func:`run_in_workers`)."""
    path = Path((argv if argv is not None else sys.argv[1:])[0])
    job = json.loads(path.read_text())
    if job.get("kind") not in KINDS:
        raise SystemExit(f"{path}: not a pgaudit job file")
    try:
        _run(job, path.parent)
    except PgauditError as exc:
        if os.environ.get("RANK", "0") == "0":  # the group is gone here: ask torchrun's env
            parameters = list(exc.mentions) if isinstance(exc, ParameterError) else None
            error = {"message": str(exc), "parameters": parameters}
            (path.parent / "error.json").write_text(json.dumps(error))
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
