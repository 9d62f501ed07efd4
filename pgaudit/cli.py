"""The `pgaudit` command line: a thin Typer layer that parses options, calls the API, prints with rich.

Heavy imports (torch, ART) happen inside the commands so `pgaudit --help` stays fast.
Every user error is a :class:`pgaudit.errors.PgauditError`: printed as one red sentence, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

import pgaudit.cli_options as o
from pgaudit.cli_parity import parity
from pgaudit.errors import Interrupted, ParameterError, PgauditError
from pgaudit.results import DEFAULT_BOOTSTRAP

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="pgaudit",
    help="Audit and harden visual anomaly detectors against adversarial attacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.command("parity")(parity)  # pgaudit.cli_parity


def _say(text: str) -> None:
    """Print one line of rich markup as it is (no highlighting, no hard wrapping)."""
    console.print(text, highlight=False, soft_wrap=True)


@app.callback()
def _root(version: o.Version = False) -> None:
    """Audit and harden visual anomaly detectors against adversarial attacks."""


# --- data commands (pgaudit data check / data synth / masks) ---


@data_app.command("check")
def data_check(data: o.DataArg, category: o.CategoryFilter = None) -> None:
    """Validate a dataset and print a summary; exit 0 when usable, 2 otherwise."""
    from pgaudit.data.check import check_dataset

    checked = check_dataset(data, category)
    for result in checked.results:
        if isinstance(result, PgauditError):
            _say(f"[red]problem:[/] {escape(str(result))}")
            continue
        console.print(result.table())
        for warning in result.warnings:
            _say(f"[yellow]warning:[/] {escape(warning)}")
        for problem in result.problems:
            _say(f"[red]problem:[/] {escape(problem)}")
    checked.raise_if_unusable()
    console.print("[green]usable[/]")


@data_app.command("synth")
def data_synth(
    out: o.SynthOut, size: o.SynthSize = 128, seed: o.SynthSeed = 0, n_train: o.SynthTrain = 80,
    n_test: o.SynthTest = 40,
) -> None:  # fmt: skip
    """Write a synthetic MVTec-layout dataset (object 'widget', texture 'fabric')."""
    from pgaudit.data.synth import DEFECT_TYPES, make_synthetic_dataset

    folders = make_synthetic_dataset(out, size=size, seed=seed, n_train=n_train, n_test=n_test)
    for folder in folders:
        _say(
            f"wrote {escape(str(folder))}: {n_train} train, {n_test - n_test // 2} good + "
            f"{n_test // 2} defective test images ({', '.join(DEFECT_TYPES)}), {size}x{size}"
        )


@app.command("masks")
def masks(
    data: o.DataArg, category: o.CategoryFilter = None, method: o.MaskMethod = "auto",
    overwrite: o.Overwrite = False,
) -> None:  # fmt: skip
    """Estimate foreground masks of the training images (train/foreground_mask/)."""
    from pgaudit.data.foreground import estimate_dataset_masks

    for report in estimate_dataset_masks(data, category, method=method, overwrite=overwrite):
        _say(escape(report.describe()))


# --- train / harden ---


def _harden_command(spec: str, data: Path, options: dict[str, Any], default_out: str) -> None:
    """Shared body of `train` and `harden`: parse the recipe options, harden, print a summary."""
    from pgaudit import tracking
    from pgaudit.api import plan_hardening, split_recipe_options
    from pgaudit.runtime import distributed, interrupts
    from pgaudit.training.setup import checkpoint_mtime, interrupted

    nproc, device, out = options.pop("nproc"), options.pop("device"), options.pop("out")
    track = tracking.from_project(options.pop("mlflow"))
    changes, options = split_recipe_options(options)
    if options.pop("all_categories"):
        from pgaudit import roots

        runs = roots.train_categories(spec, data, out or Path("models"), changes=changes,
                                      device=device, nproc=nproc, say=_say_text,
                                      track=track, **options)  # fmt: skip
        return roots.raise_if_failed(runs)
    out = out or Path(default_out)
    distributed.check_launch(nproc, device, batch_size=changes.get("batch_size"))
    with distributed.session_or_launcher(device, nproc) as device_used:
        show = console if distributed.is_main() else Console(quiet=True)
        plan = plan_hardening(spec, data, changes=changes, out=out, nproc=nproc, **options)
        for line in plan.describe():
            show.print(escape(line), highlight=False, soft_wrap=True)
        written = checkpoint_mtime(out)
        try:
            with interrupts.remembering_ctrl_c():
                result = plan.run(device=str(device_used), progress=True)
        except KeyboardInterrupt:
            raise interrupted(out, written, options["resume"]) from None
        for line in result.describe()[:-1]:
            show.print(escape(line), highlight=False, soft_wrap=True)
        show.print(f"[green]saved[/] {escape(result.describe()[-1])}", soft_wrap=True)
        if track.enabled and distributed.is_main():
            _say_text(f"mlflow run {tracking.log_training(result, track)}")


def _say_text(text: str) -> None:
    _say(escape(text))


@app.command("harden")
def harden_cmd(
    model: o.HardenModel,
    data: o.DataArg,
    out: o.TrainOut = None, all_categories: o.AllCategories = False,
    category: o.CategoryOpt = None, preset: o.Preset = None, epochs: o.Epochs = None,
    batch_size: o.BatchSize = None, lr: o.Lr = None, eps: o.TrainEps = None, steps: o.Steps = None,
    clean: o.Clean = False, no_reg: o.NoReg = False, carry: o.Carry = None, ema_decay: o.EmaDecay = None,
    val_fraction: o.ValFraction = None, select: o.Select = None, trades_beta: o.TradesBeta = None,
    clean_epochs: o.CleanEpochs = None, augment: o.Augment = None, mlflow: o.Mlflow = None,
    precision: o.TrainPrecision = None, seed: o.Seed = 0, overwrite: o.TrainOverwrite = False,
    device: o.TrainDevice = "auto", resume: o.Resume = False, workers: o.Workers = 1,
    backbone_weights: o.BackboneWeights = None, pretrained: o.Pretrained = False, nproc: o.Nproc = 1,
    factory: o.Factory = None, from_scratch: o.FromScratch = False,
) -> None:  # fmt: skip
    """Harden a detector with FAPA + PGD adversarial training (PatchGuard recipe)."""
    options = dict(locals())
    _harden_command(options.pop("model"), options.pop("data"), options, "hardened.pt")


@app.command("train")
def train_cmd(
    data: o.DataArg,
    out: o.TrainOut = None, all_categories: o.AllCategories = False,
    category: o.CategoryOpt = None, preset: o.Preset = None, epochs: o.Epochs = None,
    batch_size: o.BatchSize = None, lr: o.Lr = None, eps: o.TrainEps = None, steps: o.Steps = None,
    clean: o.Clean = False, no_reg: o.NoReg = False, carry: o.Carry = None, ema_decay: o.EmaDecay = None,
    val_fraction: o.ValFraction = None, select: o.Select = None, trades_beta: o.TradesBeta = None,
    clean_epochs: o.CleanEpochs = None, augment: o.Augment = None, mlflow: o.Mlflow = None,
    precision: o.TrainPrecision = None, seed: o.Seed = 0, overwrite: o.TrainOverwrite = False,
    device: o.TrainDevice = "auto", resume: o.Resume = False, workers: o.Workers = 1,
    backbone_weights: o.BackboneWeights = None, pretrained: o.Pretrained = False, nproc: o.Nproc = 1,
    from_scratch: o.FromScratch = False,
) -> None:  # fmt: skip
    """Train a fresh PatchGuard (= `harden patchguard DATA`)."""
    options = dict(locals())
    _harden_command("patchguard", options.pop("data"), options, "patchguard.pt")


# --- attack ---


@app.command("attack", help=o.ATTACK_HELP)
def attack(
    model: o.AttackModel = None, data: o.AttackData = None, suite: o.SuiteOpt = None,
    out: o.AuditOut = None, category: o.CategoryOpt = None, eps: o.AttackEps = None,
    steps: o.AttackSteps = None, step_size: o.StepSize = None, restarts: o.RestartsOpt = None,
    objective: o.ObjectiveOpt = None, max_images: o.MaxImages = None, seed: o.AttackSeed = 0,
    device: o.AttackDevice = "auto", batch_size: o.AttackBatch = 16,
    precision: o.AttackPrecision = "fp32", mlflow: o.Mlflow = None,
    bootstrap: o.Bootstrap = DEFAULT_BOOTSTRAP, save_maps: o.SaveMaps = False,
    report: o.WithReport = False, quiet: o.Quiet = False, trust_pickle: o.TrustPickle = False,
    image_size: o.ImageSize = None, backbone: o.Backbone = None, nproc: o.AuditNproc = 1,
    surrogate_spec: o.Surrogate = None, all_categories: o.AllCategories = False,
    factory: o.Factory = None,
) -> None:  # fmt: skip
    """Stress-test a detector with an attack suite (help text: cli_options.ATTACK_HELP)."""
    import shlex

    from pgaudit import api, tracking
    from pgaudit.attacks.eps import parse_eps, parse_eps_list
    from pgaudit.config import attack_defaults, load_project_config
    from pgaudit.runtime import distributed

    chosen = attack_defaults(
        load_project_config(), model=model, data=data, suite=suite, out=out, category=category
    )
    track = tracking.from_project(mlflow)
    suite_options = dict(
        eps=parse_eps_list(eps) if eps is not None else None,
        steps=steps,
        objective=objective,
        step_size=parse_eps(step_size, option="--step-size") if step_size is not None else None,
        restarts=restarts,
    )
    distributed.check_launch(nproc, device)
    options = dict(suite_options=suite_options, trust_pickle=trust_pickle, image_size=image_size,
                   backbone=backbone, surrogate=surrogate_spec, nproc=nproc, seed=seed,
                   factory=factory, bootstrap=bootstrap, save_maps=save_maps, precision=precision,
                   max_images=max_images, batch_size=batch_size)  # fmt: skip
    if all_categories:
        from pgaudit import roots
        from pgaudit.dataset_summary import read_summary

        runs, summary = roots.audit_categories(
            chosen["model"], chosen["data"], chosen["suite"], out_dir=chosen["out"], say=_say_text,
            category=chosen["category"], device=device, run_options={"progress": not quiet},
            **options,
        )  # fmt: skip
        _say_text(f"wrote {summary}")
        if report:
            _write_report(chosen["out"])
        if track.enabled:
            _say_text(f"mlflow run {tracking.log_summary(read_summary(summary), summary, track)}")
        return roots.raise_if_failed(runs)
    with distributed.session_or_launcher(device, nproc, final_barrier=False) as dev:
        show = console if distributed.is_main() else Console(quiet=True)
        plan = api.plan_audit(chosen["model"], chosen["data"], chosen["suite"], out_dir=chosen["out"],
                              category=chosen["category"], device=dev, **options)  # fmt: skip
        for line in plan.describe():
            show.print(escape(line), highlight=False, soft_wrap=True)
        command = shlex.join(["pgaudit", *sys.argv[1:]])
        results = plan.run(progress=not quiet, command=command, console=err_console)
    audit_dir = chosen["out"]
    if results is None:  # a worker other than rank 0
        return
    from pgaudit.attacks.summary import audit_notes, results_table

    console.print(results_table(results))
    for note in audit_notes(results):
        _say(note)
    console.print(f"wrote {escape(str(audit_dir / 'results.json'))}", highlight=False)
    if report:
        _write_report(audit_dir)
    if track.enabled:
        _say_text(f"mlflow run {tracking.log_audit(audit_dir, results, track)}")


def _write_report(audit_dir: Path) -> None:
    from pgaudit.report import project_gate_criteria, render_report

    written = render_report(
        audit_dir, audit_dir / "report.html", gate_criteria=project_gate_criteria()
    )
    console.print(f"wrote {escape(str(written))}", highlight=False)


# --- report / gate / demo ---


@app.command("gate")
def gate(
    results: o.GateResults, min_robust_auroc: o.MinRobust = None, metric: o.GateMetric = None,
    min_clean_auroc: o.MinClean = None, junit: o.Junit = None, use_lower_bound: o.LowerBound = None,
    baseline: o.Baseline = None, max_drop: o.MaxDrop = None, max_parity_gap: o.MaxParity = None,
    significant_only: o.SignificantOnly = None, summary_md: o.SummaryMd = None,
) -> None:  # fmt: skip
    """CI gate: exit 0 pass, 1 fail (one line per failed criterion), 2 unusable input.

    Thresholds not given here come from the gate table of pgaudit.toml (tool.pgaudit.gate in
    pyproject.toml) in the working directory.
    """
    from pgaudit.api import check_gate
    from pgaudit.config import load_project_config
    from pgaudit.gate import GateCriteria, write_junit, write_summary_md

    criteria = GateCriteria.resolve(
        load_project_config(), metric=metric, min_robust_auroc=min_robust_auroc,
        min_clean_auroc=min_clean_auroc, use_lower_bound=use_lower_bound, max_drop=max_drop,
        significant_only=significant_only, max_parity_gap=max_parity_gap,
    )  # fmt: skip
    outcome = check_gate(results, criteria, baseline=baseline)
    if junit is not None:
        write_junit(outcome, junit)
    if summary_md is not None:
        write_summary_md(outcome, summary_md, title=f"pgaudit gate: {results}")
    for criterion in outcome.criteria:
        style = "green" if criterion.passed else "bold red"
        _say(f"[{style}]{escape(criterion.message)}[/]")
    if not outcome.passed:
        raise typer.Exit(1)


@app.command("report")
def report(
    audit_dir: o.AuditDir, out: o.ReportOut = None, include_paths: o.IncludePaths = False,
    compare: o.Compare = None,
) -> None:  # fmt: skip
    """Write a self-contained HTML audit report (no network, shareable as an attachment)."""
    from pgaudit.report import project_gate_criteria, render_report

    audits = [audit_dir, *compare] if compare else audit_dir  # one folder: a root's summary too
    written = render_report(audits, out or audit_dir / "report.html", include_paths=include_paths,
                            gate_criteria=project_gate_criteria())  # fmt: skip
    _say(f"wrote {escape(str(written))} ({written.stat().st_size / 1e6:.1f} MB)")


@app.command("demo")
def demo_cmd(
    out: o.DemoOut = Path("pgaudit-demo"), preset: o.DemoPreset = "tiny",
    epochs: o.DemoEpochs = None, n_train: o.DemoTrain = 60, n_test: o.DemoTest = 40,
    seed: o.PlainSeed = 0,
) -> None:  # fmt: skip
    """The whole job on built-in synthetic data: train clean + hardened, attack both, report, gate."""
    import time

    from pgaudit.demo import DemoSettings, run_demo

    started = time.perf_counter()
    settings = DemoSettings(preset=preset, epochs=epochs, n_train=n_train, n_test=n_test, seed=seed)
    outcome = run_demo(out, settings, console)
    console.print(outcome.table())
    _say(outcome.gate_line())
    minutes = (time.perf_counter() - started) / 60
    console.print(
        f"[bold]report:[/] {escape(str(outcome.report))}  ({minutes:.1f} min)", soft_wrap=True
    )


@app.command("fit-baseline")
def fit_baseline_cmd(
    kind: o.BaselineKind, data: o.BaselineData, out: o.BaselineOut,
    category: o.CategoryOpt = None, image_size: o.BaselineSize = 128, coreset: o.Coreset = 0.1,
    sampler: o.Sampler = "greedy", epochs: o.BaselineEpochs = None, max_train: o.MaxTrain = None,
    seed: o.PlainSeed = 0, device: o.BaselineDevice = "cpu",
) -> None:  # fmt: skip
    """Fit a baseline detector (PatchCore-style or autoencoder) on the normal training images."""
    from pgaudit.models.baselines import describe_fit, fit_baseline

    with console.status(f"fitting {kind} on {data}"):
        path, summary = fit_baseline(
            kind, data, out, category=category, image_size=image_size, coreset=coreset,
            sampler=sampler, epochs=epochs, max_train=max_train, seed=seed, device=device,
        )  # fmt: skip
    _say(f"[green]saved[/] {escape(describe_fit(kind, path, summary, image_size))}")


#: API parameters whose CLI option is not ``--`` + the name with dashes.
_OPTION_OF: dict[str, str] = {"surrogate": "--surrogate", "out_dir": "--out"}


def _stop(text: str = "interrupted") -> NoReturn:
    """Ctrl-C: one line on stderr, exit 130 (the shell's code for SIGINT)."""
    err_console.print(escape(text), highlight=False, soft_wrap=True)
    sys.exit(130)


def main() -> None:
    """Console entry point: usage errors print click's usage paragraph and exit 2, user errors one
    sentence and exit 2, Ctrl-C one line and exit 130.

    Typer (>= 0.27.2) vendors click: its usage errors are ``typer.TyperException``, never
    ``click.ClickException``, and it turns a KeyboardInterrupt inside a command into exit 130.
    """
    try:
        rc = app(standalone_mode=False)
    except Interrupted as exc:
        _stop(exc.for_cli(_OPTION_OF))
    except PgauditError as exc:
        text = exc.for_cli(_OPTION_OF) if isinstance(exc, ParameterError) else str(exc)
        err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _stop()
    except typer.TyperException as exc:  # a usage error: bad option, command, argument or value
        show = getattr(exc, "show", None)
        if callable(show):
            show()  # usage line, help hint, "Error: ..."
        else:  # pragma: no cover - a future typer exception without show()
            err_console.print(f"Error: {escape(exc.format_message())}", highlight=False)
        sys.exit(exc.exit_code)
    if rc == 130:  # typer's answer to a KeyboardInterrupt inside a command
        _stop()
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
