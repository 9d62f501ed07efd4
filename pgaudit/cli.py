"""The `pgaudit` command line: a thin Typer layer that parses options, calls the API, prints with rich.

Heavy imports (torch, ART) happen inside the commands so `pgaudit --help` stays fast.
Every user error is a :class:`pgaudit.errors.PgauditError`: printed as one red sentence, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pgaudit import __version__
from pgaudit.errors import ParameterError, PgauditError
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


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"pgaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Audit and harden visual anomaly detectors against adversarial attacks."""


# --- data commands (pgaudit data check / data synth / masks) ---

_DATA_HELP = "A dataset category folder, or a root folder with several categories."
_CATEGORY_HELP = "Only this category of a dataset root (default: all)."


def _print_check(report) -> None:  # report: pgaudit.data.check.CheckReport
    console.print(report.table())
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)


@data_app.command("check")
def data_check(
    data: Path = typer.Argument(..., help=_DATA_HELP),
    category: str | None = typer.Option(None, "--category", "-c", help=_CATEGORY_HELP),
) -> None:
    """Validate a dataset and print a summary; exit 0 when usable, 2 otherwise."""
    from pgaudit.data.check import check_category
    from pgaudit.data.layouts import select_categories

    problems: list[str] = []
    for ref in select_categories(data, category):
        try:
            report = check_category(ref.read())
        except PgauditError as exc:
            console.print(f"[red]problem:[/] {exc}", highlight=False, soft_wrap=True)
            problems.append(str(exc))
            continue
        _print_check(report)
        problems += report.problems
    if len(problems) == 1:
        raise PgauditError(problems[0])
    if problems:
        raise PgauditError(
            f"{data}: {len(problems)} problems (listed above, the first: {problems[0]}); fix them "
            "and run `pgaudit data check` again."
        )
    console.print("[green]usable[/]")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Argument(..., help="Output folder; categories widget/ and fabric/ go in it."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    n_train: int = typer.Option(80, "--n-train", help="Normal training images per category."),
    n_test: int = typer.Option(40, "--n-test", help="Test images per category (half defective)."),
) -> None:
    """Write a synthetic MVTec-layout dataset (object 'widget', texture 'fabric')."""
    from pgaudit.data.synth import DEFECT_TYPES, make_synthetic_dataset

    folders = make_synthetic_dataset(out, size=size, seed=seed, n_train=n_train, n_test=n_test)
    for folder in folders:
        console.print(
            f"wrote {folder}: {n_train} train, {n_test - n_test // 2} good + {n_test // 2} "
            f"defective test images ({', '.join(DEFECT_TYPES)}), {size}x{size}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("masks")
def masks(
    data: Path = typer.Argument(..., help=_DATA_HELP),
    category: str | None = typer.Option(None, "--category", "-c", help=_CATEGORY_HELP),
    method: str = typer.Option(
        "auto", "--method", help="auto | background | border | full (see the docs)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing masks."),
) -> None:
    """Estimate foreground masks of the training images (train/foreground_mask/)."""
    from pgaudit.data.foreground import METHODS, estimate_foreground_masks, refuse_existing
    from pgaudit.data.layouts import open_categories

    if method not in METHODS:
        raise PgauditError(f"--method {method}: unknown method; use one of {', '.join(METHODS)}.")
    categories = open_categories(data, category)
    if not overwrite:
        for cat in categories:  # refuse before writing anything
            refuse_existing(cat)
    for cat in categories:
        report = estimate_foreground_masks(cat, method=method, overwrite=overwrite)
        chosen = f"{report.method} (auto: {report.reason})" if method == "auto" else report.method
        console.print(
            f"{cat.name}: method {chosen}; wrote {len(report.written)} masks to "
            f"{cat.foreground_dir} (mean foreground {report.mean_coverage:.0%})",
            highlight=False,
            soft_wrap=True,
        )


# --- train / harden ---

# fmt: off
Preset = Annotated[str | None, typer.Option("--preset", help=(
    "Model preset for a fresh PatchGuard: tiny | lite | small | paper (default tiny)."))]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Epochs (default: the preset's).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Normal images per batch.")]
Lr = Annotated[float | None, typer.Option("--lr", help="AdamW learning rate.")]
TrainEps = Annotated[str | None, typer.Option("--eps", help="Training L∞ budget, e.g. 8/255.")]
Steps = Annotated[int | None, typer.Option("--steps", help="PGD steps of the training attack.")]
Clean = Annotated[bool, typer.Option("--clean", help="No adversarial terms (the baseline).")]
NoReg = Annotated[bool, typer.Option("--no-reg", help="No attention regulariser.")]
Carry = Annotated[bool | None, typer.Option("--carry/--no-carry", help=(
    "Start each image's training attack from its perturbation of the previous epoch, so PGD "
    "steps accumulate across epochs (default: the preset's)."))]
EmaDecay = Annotated[float | None, typer.Option("--ema-decay", help=(
    "Keep a moving average of the weights with this decay, e.g. 0.99 (0: off)."))]
ValFraction = Annotated[float | None, typer.Option("--val-fraction", help=(
    "Hold out this fraction of the normal training images (plus their pseudo-anomalies) and "
    "validate every epoch, clean and under PGD."))]
Select = Annotated[bool | None, typer.Option("--select/--no-select", help=(
    "Keep the epoch with the best robust validation score among those within the preset's "
    "margin of the best clean one (needs --val-fraction)."))]
TradesBeta = Annotated[float | None, typer.Option("--trades-beta", help=(
    "TRADES balance: adversarial terms become β·KL(clean ‖ adversarial) (0: the paper's)."))]
CleanEpochs = Annotated[int | None, typer.Option("--clean-epochs", help=(
    "Train this many epochs without adversarial terms first, then harden from there "
    "(default: the preset's)."))]
Augment = Annotated[str | None, typer.Option("--augment", help=(
    "none | flips | dihedral: random flips (and 90° turns) of the training images, for images "
    "without a preferred orientation (default: the preset's)."))]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (deterministic on the CPU).")]
TrainDevice = Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out.")]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader workers for FAPA (0: inline).")]
BackboneWeights = Annotated[Path | None, typer.Option("--backbone-weights", help=(
    "Local ViT weights (timm/safetensors/state_dict)."))]
Pretrained = Annotated[bool, typer.Option("--pretrained", help=(
    "Hub weights for the backbone (needs the internet)."))]
Nproc = Annotated[int, typer.Option("--nproc", help=(
    "Training processes on this machine, each with an equal share of every batch "
    "(torch.distributed; one GPU each on CUDA). Across machines: torchrun -m pgaudit …."))]
CategoryOpt = Annotated[str | None, typer.Option("--category", "-c", help="Category of a root.")]
TrainOut = Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write.")]
# fmt: on


def _harden_command(spec: str, data: Path, options: dict[str, Any]) -> None:
    """Shared body of `train` and `harden`: parse the recipe options, harden, print a summary."""
    from pgaudit.api import plan_hardening
    from pgaudit.attacks.eps import parse_eps
    from pgaudit.data.layouts import open_category
    from pgaudit.runtime import distributed

    nproc, device, out = options.pop("nproc"), options.pop("device"), options.pop("out")
    distributed.check_launch(nproc, device, batch_size=options["batch_size"])
    eps, clean, no_reg = options.pop("eps"), options.pop("clean"), options.pop("no_reg")
    changes = {
        "epochs", "batch_size", "lr", "steps", "ema_decay", "val_fraction", "select",
        "trades_beta", "clean_epochs", "augment",
    }  # fmt: skip
    recipe = {k: options.pop(k) for k in changes}
    recipe["carry_perturbations"] = options.pop("carry")
    recipe["eps"] = parse_eps(eps) if eps is not None else None
    recipe["adversarial"] = not clean  # a clean-trained checkpoint is hardened too
    recipe["regularise"] = False if no_reg else None
    if nproc > 1:  # start the workers: each runs this command without --nproc
        open_category(data, options["category"])
        distributed.launch(distributed.without_option(sys.argv[1:], "--nproc"), nproc)
        return
    with distributed.worker_session(device) as device_used:
        show = console if distributed.is_main() else Console(quiet=True)
        changes = {k: v for k, v in recipe.items() if v is not None}
        plan = plan_hardening(spec, data, changes=changes, out=out, **options)
        for line in plan.describe():
            show.print(line, highlight=False, soft_wrap=True)
        result = plan.run(device=str(device_used), progress=True)
        for line in result.describe()[:-1]:
            show.print(line, highlight=False, soft_wrap=True)
        show.print(f"[green]saved[/] {escape(result.describe()[-1])}", soft_wrap=True)


@app.command("harden")
def harden_cmd(
    model: str = typer.Argument(
        ..., help="A pgaudit checkpoint, or `patchguard` for a fresh model of --preset."
    ),
    data: Path = typer.Argument(..., help=_DATA_HELP),
    out: TrainOut = Path("hardened.pt"),
    category: CategoryOpt = None, preset: Preset = None, epochs: Epochs = None,
    batch_size: BatchSize = None, lr: Lr = None, eps: TrainEps = None, steps: Steps = None,
    clean: Clean = False, no_reg: NoReg = False, carry: Carry = None, ema_decay: EmaDecay = None,
    val_fraction: ValFraction = None, select: Select = None, trades_beta: TradesBeta = None,
    clean_epochs: CleanEpochs = None, augment: Augment = None, seed: Seed = 0,
    device: TrainDevice = "auto", resume: Resume = False, workers: Workers = 1,
    backbone_weights: BackboneWeights = None, pretrained: Pretrained = False, nproc: Nproc = 1,
) -> None:  # fmt: skip
    """Harden a detector with FAPA + PGD adversarial training (PatchGuard recipe)."""
    options = dict(locals())
    _harden_command(options.pop("model"), options.pop("data"), options)


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help=_DATA_HELP),
    out: TrainOut = Path("patchguard.pt"),
    category: CategoryOpt = None, preset: Preset = None, epochs: Epochs = None,
    batch_size: BatchSize = None, lr: Lr = None, eps: TrainEps = None, steps: Steps = None,
    clean: Clean = False, no_reg: NoReg = False, carry: Carry = None, ema_decay: EmaDecay = None,
    val_fraction: ValFraction = None, select: Select = None, trades_beta: TradesBeta = None,
    clean_epochs: CleanEpochs = None, augment: Augment = None, seed: Seed = 0,
    device: TrainDevice = "auto", resume: Resume = False, workers: Workers = 1,
    backbone_weights: BackboneWeights = None, pretrained: Pretrained = False, nproc: Nproc = 1,
) -> None:  # fmt: skip
    """Train a fresh PatchGuard (= `harden patchguard DATA`)."""
    options = dict(locals())
    _harden_command("patchguard", options.pop("data"), options)


# --- attack ---


def _attack_suite_help() -> str:
    from pgaudit.attacks.suites import describe_suites

    return f"Attack suite (default quick). {describe_suites()}"


_ATTACK_HELP = (
    "Stress-test a detector with an attack suite; write AUDIT_DIR/results.json and scores.npz."
    "\n\n"
    "Detection attacks push each image score the wrong way (normal up, anomalous down); "
    "localization attacks raise normal patches and lower defective ones. The robust metrics are "
    "the per-image worst case over the clean images and all L∞ attacks at the headline ε. "
    "MODEL, DATA, --suite, --out and --category default to pgaudit.toml when present."
)


# fmt: off
AttackModel = Annotated[str | None, typer.Argument(help=(
    "A pgaudit checkpoint, an official PatchGuard .pth, a TorchScript file, or "
    "package.module:function (default: `model` in pgaudit.toml)."))]
AttackData = Annotated[Path | None, typer.Argument(help=(
    "Dataset category folder or root (default: `data` in pgaudit.toml)."))]
SuiteOpt = Annotated[str | None, typer.Option("--suite", "-s", help=_attack_suite_help())]
AuditOut = Annotated[Path | None, typer.Option("--out", "-o", help=(
    "Audit folder to write (default: audit)."))]
AttackEps = Annotated[str | None, typer.Option("--eps", help=(
    "L∞ budget(s) replacing the suite's, e.g. 8/255 or 2/255,8/255; the largest is the "
    "headline ε of the robust metrics."))]
AttackSteps = Annotated[int | None, typer.Option("--steps", help=(
    "Steps (queries for Square) of every iterative attack."))]
StepSize = Annotated[str | None, typer.Option("--step-size", help=(
    "PGD step size, e.g. 1/255 (default 2.5·ε/steps)."))]
Restarts = Annotated[int | None, typer.Option("--restarts", help=(
    "Random restarts of PGD, AutoPGD and Square."))]
Objective = Annotated[str | None, typer.Option("--objective", help=(
    "both | detection | localization (default both)."))]
MaxImages = Annotated[int | None, typer.Option("--max-images", help=(
    "Attack a class-stratified random subset of this size."))]
AttackSeed = Annotated[int, typer.Option("--seed", help="Random seed (random starts, subsets).")]
AttackDevice = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
AttackBatch = Annotated[int, typer.Option("--batch-size", help="Images per attack batch.")]
Bootstrap = Annotated[int, typer.Option("--bootstrap", help=(
    "Bootstrap resamples for 95% confidence intervals (0: none)."))]
SaveMaps = Annotated[bool, typer.Option("--save-maps", help=(
    "Also write maps.npz (masks, clean and worst-case maps)."))]
WithReport = Annotated[bool, typer.Option("--report", help="Also write AUDIT_DIR/report.html.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
TrustPickle = Annotated[bool, typer.Option("--trust-pickle", help=(
    "Allow a MODEL file that needs full unpickling (a pickled nn.Module); this runs code from "
    "the file: only for files you trust."))]
ImageSize = Annotated[int | None, typer.Option("--image-size", help=(
    "Input side in pixels for detectors without an `image_size` attribute."))]
Backbone = Annotated[str | None, typer.Option("--backbone", help=(
    "timm name of the ViT inside an official PatchGuard checkpoint."))]
AuditNproc = Annotated[int, typer.Option("--nproc", help=(
    "Worker processes on this machine sharing the test batches (torch.distributed; one GPU "
    "each on CUDA). Across machines: torchrun -m pgaudit attack …."))]
Surrogate = Annotated[str | None, typer.Option("--surrogate", help=(
    "A smooth stand-in MODEL (e.g. a clean-trained baseline) for the standard/full suites' "
    "transfer check; without it that check is skipped."))]
# fmt: on


@app.command("attack", help=_ATTACK_HELP)
def attack(
    model: AttackModel = None, data: AttackData = None, suite: SuiteOpt = None,
    out: AuditOut = None, category: CategoryOpt = None, eps: AttackEps = None,
    steps: AttackSteps = None, step_size: StepSize = None, restarts: Restarts = None,
    objective: Objective = None, max_images: MaxImages = None, seed: AttackSeed = 0,
    device: AttackDevice = "auto", batch_size: AttackBatch = 16,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, save_maps: SaveMaps = False,
    report: WithReport = False, quiet: Quiet = False, trust_pickle: TrustPickle = False,
    image_size: ImageSize = None, backbone: Backbone = None, nproc: AuditNproc = 1,
    surrogate_spec: Surrogate = None,
) -> None:  # fmt: skip
    """Stress-test a detector with an attack suite (help text: _ATTACK_HELP)."""
    import shlex

    from pgaudit import api
    from pgaudit.attacks.eps import parse_eps, parse_eps_list
    from pgaudit.config import attack_defaults, load_project_config
    from pgaudit.runtime import distributed

    chosen = attack_defaults(
        load_project_config(), model=model, data=data, suite=suite, out=out, category=category
    )
    distributed.check_launch(nproc, device)
    suite_options = dict(
        eps=parse_eps_list(eps) if eps is not None else None,
        steps=steps,
        objective=objective,
        step_size=parse_eps(step_size, option="--step-size") if step_size is not None else None,
        restarts=restarts,
    )
    sizes = dict(max_images=max_images, batch_size=batch_size)
    if nproc > 1:  # refuse what every worker would refuse, then start them
        api.check_audit_options(max_images=max_images, batch_size=batch_size, bootstrap=bootstrap)
        api.check_audit_workers(
            nproc, chosen["suite"], chosen["data"], category=chosen["category"],
            suite_options=suite_options, **sizes,
        )  # fmt: skip
        distributed.launch(distributed.without_option(sys.argv[1:], "--nproc"), nproc)
        return

    with distributed.worker_session(device, final_barrier=False) as torch_device:
        show = console if distributed.is_main() else Console(quiet=True)
        plan = api.plan_audit(
            chosen["model"], chosen["data"], chosen["suite"], out_dir=chosen["out"],
            category=chosen["category"], suite_options=suite_options, device=torch_device,
            trust_pickle=trust_pickle, image_size=image_size, backbone=backbone,
            surrogate=surrogate_spec, seed=seed, bootstrap=bootstrap, save_maps=save_maps, **sizes,
        )  # fmt: skip
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
        console.print(note, highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(audit_dir / 'results.json'))}", highlight=False)
    if report:
        from pgaudit.report import project_gate_criteria, render_report

        written = render_report(
            audit_dir, audit_dir / "report.html", gate_criteria=project_gate_criteria()
        )
        console.print(f"wrote {escape(str(written))}", highlight=False)


# --- report / gate / demo ---


@app.command("gate")
def gate(
    results: Path = typer.Argument(..., help="results.json, or the audit folder holding it."),
    min_robust_auroc: float | None = typer.Option(
        None, "--min-robust-auroc", help="Fail when the robust (worst-case) metric is below this."
    ),
    metric: str | None = typer.Option(
        None, "--metric", help="image_auroc | pixel_auroc | aupro (default image_auroc)."
    ),
    min_clean_auroc: float | None = typer.Option(
        None, "--min-clean-auroc", help="Fail when the clean metric is below this."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML to this file."),
    use_lower_bound: bool | None = typer.Option(
        None,
        "--use-lower-bound/--no-use-lower-bound",
        help="Compare the lower bound of the bootstrap 95% CI instead of the value.",
    ),
) -> None:
    """CI gate: exit 0 pass, 1 fail (one line per failed criterion), 2 unusable input.

    Thresholds not given here come from the gate table of pgaudit.toml (tool.pgaudit.gate in
    pyproject.toml) in the working directory.
    """
    from rich.markup import escape

    from pgaudit.config import load_project_config
    from pgaudit.gate import GateCriteria, evaluate_gate, write_junit
    from pgaudit.results import read_results

    criteria = GateCriteria.resolve(
        load_project_config(),
        metric=metric,
        min_robust_auroc=min_robust_auroc,
        min_clean_auroc=min_clean_auroc,
        use_lower_bound=use_lower_bound,
    )
    source = results / "results.json" if results.is_dir() else results
    outcome = evaluate_gate(read_results(results), criteria, source=str(source))
    if junit is not None:
        write_junit(outcome, junit)
    for criterion in outcome.criteria:
        style = "green" if criterion.passed else "bold red"
        console.print(f"[{style}]{escape(criterion.message)}[/]", highlight=False, soft_wrap=True)
    if not outcome.passed:
        raise typer.Exit(1)


@app.command("report")
def report(
    audit_dir: Path = typer.Argument(..., help="Audit folder holding results.json."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="HTML file to write (default: AUDIT_DIR/report.html)."
    ),
    include_paths: bool = typer.Option(
        False, "--include-paths", help="Show absolute local paths (default: base names only)."
    ),
    compare: list[Path] | None = typer.Option(
        None,
        "--compare",
        metavar="AUDIT_DIR",
        help="Another audit folder to show side by side (repeatable).",
    ),
) -> None:
    """Write a self-contained HTML audit report (no network, shareable as an attachment)."""
    from pgaudit.report import project_gate_criteria, render_report

    written = render_report(
        [audit_dir, *(compare or [])],
        out if out is not None else audit_dir / "report.html",
        include_paths=include_paths,
        gate_criteria=project_gate_criteria(),
    )
    size = written.stat().st_size / 1e6
    console.print(f"wrote {written} ({size:.1f} MB)", highlight=False, soft_wrap=True)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("pgaudit-demo"), "--out", "-o", help="Folder for everything."),
    preset: str = typer.Option("tiny", "--preset", help="tiny | lite."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs per model (demo default)."),
    n_train: int = typer.Option(60, "--n-train", help="Synthetic training images."),
    n_test: int = typer.Option(40, "--n-test", help="Synthetic test images."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """The whole job on built-in synthetic data: train clean + hardened, attack both, report, gate."""
    import time

    from pgaudit.demo import DemoSettings, run_demo

    started = time.perf_counter()
    settings = DemoSettings(preset=preset, epochs=epochs, n_train=n_train, n_test=n_test, seed=seed)
    outcome = run_demo(out, settings, console)
    console.print(outcome.table())
    console.print(outcome.gate_line(), highlight=False, soft_wrap=True)
    minutes = (time.perf_counter() - started) / 60
    console.print(
        f"[bold]report:[/] {escape(str(outcome.report))}  ({minutes:.1f} min)", soft_wrap=True
    )


# --- baselines ---


@app.command("fit-baseline")
def fit_baseline_cmd(
    kind: str = typer.Argument(..., help="patchcore | autoencoder."),
    data: Path = typer.Argument(..., help="Dataset category folder (or a root with --category)."),
    out: Path = typer.Option(..., "--out", "-o", help="Baseline checkpoint to write."),
    category: str | None = typer.Option(None, "--category", "-c", help="Category of a root."),
    image_size: int = typer.Option(128, "--image-size", help="Input side in pixels (x16)."),
    coreset: float = typer.Option(
        0.1, "--coreset", help="PatchCore: fraction of training patch features kept."
    ),
    sampler: str = typer.Option("greedy", "--sampler", help="PatchCore coreset: greedy | random."),
    epochs: int | None = typer.Option(None, "--epochs", help="Autoencoder epochs (default 40)."),
    max_train: int | None = typer.Option(
        None, "--max-train", help="Use at most this many training images."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N."),
) -> None:
    """Fit a baseline detector (PatchCore-style or autoencoder) on the normal training images."""
    from pgaudit.models.baselines import fit_baseline

    with console.status(f"fitting {kind} on {data}"):
        path, summary = fit_baseline(
            kind, data, out, category=category, image_size=image_size, coreset=coreset,
            sampler=sampler, epochs=epochs, max_train=max_train, seed=seed, device=device,
        )  # fmt: skip
    extra = (
        f"memory bank {summary['memory_bank']} features"
        if kind == "patchcore"
        else f"final loss {summary['final_loss']:.4f}"
    )
    console.print(
        f"[green]saved[/] {escape(str(path))}: {kind} on {escape(summary['category'])} "
        f"({summary['train_images']} images, {image_size} px), {extra}, "
        f"{summary['seconds']:.1f} s",
        soft_wrap=True,
    )


#: API parameters whose CLI option is not ``--`` + the name with dashes.
_OPTION_OF: dict[str, str] = {"surrogate": "--surrogate", "out_dir": "--out"}


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        rc = app(standalone_mode=False)
    except PgauditError as exc:
        text = exc.for_cli(_OPTION_OF) if isinstance(exc, ParameterError) else str(exc)
        err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through as ClickException
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
