"""The options of the `pgaudit` commands, declared once as Typer ``Annotated`` aliases.

Declarations only (names, flags, help texts): :mod:`pgaudit.cli` uses them, and ``train`` and
``harden`` share theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgaudit.attacks.suites import describe_suites

DATA_HELP = "A dataset category folder, or a root folder with several categories."

# fmt: off
DataArg = Annotated[Path, typer.Argument(help=DATA_HELP)]
CategoryFilter = Annotated[str | None, typer.Option("--category", "-c", help=(
    "Only this category of a dataset root (default: all)."))]
MaskMethod = Annotated[str, typer.Option("--method", help=(
    "auto | background | border | full (see the docs)."))]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing masks.")]
SynthOut = Annotated[Path, typer.Argument(help=(
    "Output folder; categories widget/ and fabric/ go in it."))]
SynthSize = Annotated[int, typer.Option("--size", help="Image side in pixels.")]
SynthSeed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")]
SynthTrain = Annotated[int, typer.Option("--n-train", help="Normal training images per category.")]
SynthTest = Annotated[int, typer.Option("--n-test", help=(
    "Test images per category (half defective)."))]
# fmt: on

# --- train / harden ---

HardenModel = Annotated[
    str,
    typer.Argument(help=("A pgaudit checkpoint, or `patchguard` for a fresh model of --preset.")),
]
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
TrainPrecision = Annotated[str | None, typer.Option("--precision", help=(
    "fp32 | bf16 | fp16 (CUDA) | auto: precision of the attack passes and the training "
    "forward/backward; losses, optimizer and validation stay fp32 (default: the preset's)."))]
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
TrainOut = Annotated[Path | None, typer.Option("--out", "-o", help=(
    "Checkpoint to write (default patchguard.pt / hardened.pt; with --all-categories a folder of "
    "<category>.pt, default models/)."))]
TrainOverwrite = Annotated[bool, typer.Option("--overwrite", help=(
    "Replace an existing --out checkpoint (never a file that is not one)."))]
FromScratch = Annotated[bool, typer.Option("--from-scratch", help=(
    "Train the preset's backbone from random weights (preset paper needs this, --backbone-weights "
    "or --pretrained: the published method fine-tunes pretrained DINOv2)."))]
Factory = Annotated[str | None, typer.Option("--factory", metavar="PKG.MOD:FUNC", help=(
    "Confirm the factory a hardened Python detector's checkpoint names: pgaudit imports and "
    "calls it only then (a model file never picks the code that runs)."))]
Mlflow = Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help=(
    "Log the run to MLflow (pip install 'pgaudit[mlflow]'; where to: [mlflow] in pgaudit.toml, "
    "else MLFLOW_TRACKING_URI, else ./mlflow.db)."))]
AllCategories = Annotated[bool, typer.Option("--all-categories", help=(
    "Every category of the DATA root, one by one (a category that fails is reported, the others "
    "still run); rerun to continue: finished categories are skipped, interrupted ones resumed."))]
# fmt: on

# --- attack ---

# fmt: off
AttackModel = Annotated[str | None, typer.Argument(help=(
    "A pgaudit checkpoint, an official PatchGuard .pth, a TorchScript file, or "
    "package.module:function (default: `model` in pgaudit.toml)."))]
AttackData = Annotated[Path | None, typer.Argument(help=(
    "Dataset category folder or root (default: `data` in pgaudit.toml)."))]
SuiteOpt = Annotated[str | None, typer.Option("--suite", "-s", help=(
    f"Attack suite (default quick). {describe_suites()}"))]
AuditOut = Annotated[Path | None, typer.Option("--out", "-o", help=(
    "Audit folder to write (default: audit)."))]
AttackEps = Annotated[str | None, typer.Option("--eps", help=(
    "L∞ budget(s) replacing the suite's, e.g. 8/255 or 2/255,8/255; the largest is the "
    "headline ε of the robust metrics."))]
AttackSteps = Annotated[int | None, typer.Option("--steps", help=(
    "Steps (queries for Square) of every iterative attack."))]
StepSize = Annotated[str | None, typer.Option("--step-size", help=(
    "PGD step size, e.g. 1/255 (default 2.5·ε/steps)."))]
RestartsOpt = Annotated[int | None, typer.Option("--restarts", help=(
    "Random restarts of PGD, AutoPGD and Square."))]
ObjectiveOpt = Annotated[str | None, typer.Option("--objective", help=(
    "both | detection | localization (default both)."))]
MaxImages = Annotated[int | None, typer.Option("--max-images", help=(
    "Attack a class-stratified random subset of this size."))]
AttackSeed = Annotated[int, typer.Option("--seed", help="Random seed (random starts, subsets).")]
AttackDevice = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
AttackBatch = Annotated[int, typer.Option("--batch-size", help="Images per attack batch.")]
AttackPrecision = Annotated[str, typer.Option("--precision", help=(
    "fp32 | bf16 | fp16 (CUDA) | auto: precision of the attacks' gradient passes; every "
    "reported score is recomputed in fp32."))]
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

ATTACK_HELP = (
    "Stress-test a detector with an attack suite; write AUDIT_DIR/results.json and scores.npz."
    "\n\n"
    "Detection attacks push each image score the wrong way (normal up, anomalous down); "
    "localization attacks raise normal patches and lower defective ones. The robust metrics are "
    "the per-image worst case over the clean images and all L∞ attacks at the headline ε. "
    "MODEL, DATA, --suite, --out and --category default to pgaudit.toml when present."
)


def _print_version(value: bool) -> None:
    if value:
        from pgaudit import __version__

        typer.echo(f"pgaudit {__version__}")
        raise typer.Exit()


Version = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version."),
]

# --- gate / report / demo / fit-baseline ---

# fmt: off
GateResults = Annotated[Path, typer.Argument(help="results.json, or the audit folder holding it.")]
MinRobust = Annotated[float | None, typer.Option("--min-robust-auroc", help=(
    "Fail when the robust (worst-case) metric is below this (equal passes)."))]
GateMetric = Annotated[str | None, typer.Option("--metric", help=(
    "image_auroc | pixel_auroc | aupro (default image_auroc)."))]
MinClean = Annotated[float | None, typer.Option("--min-clean-auroc", help=(
    "Fail when the clean metric is below this (equal passes)."))]
Junit = Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML to this file.")]
Baseline = Annotated[Path | None, typer.Option("--baseline", metavar="AUDIT", help=(
    "An earlier audit (folder or results.json) of the same data and suite to compare with."))]
MaxDrop = Annotated[float | None, typer.Option("--max-drop", help=(
    "With --baseline: fail when the robust metric fell more than this below the baseline's."))]
MaxParity = Annotated[float | None, typer.Option("--max-parity-gap", help=(
    "Fail when an export audited with --surrogate scores its clean images further from the "
    "surrogate than this (relative to the surrogate's range), e.g. 1e-3."))]  # fmt: skip
SignificantOnly = Annotated[bool | None, typer.Option("--significant-only/--any-drop", help=(
    "With --max-drop: fail only when a paired bootstrap over the test images confirms the drop "
    "(image_auroc)."))]
SummaryMd = Annotated[Path | None, typer.Option("--summary-md", help=(
    "Append a Markdown verdict table to this file (e.g. $GITHUB_STEP_SUMMARY)."))]
LowerBound = Annotated[bool | None, typer.Option("--use-lower-bound/--no-use-lower-bound", help=(
    "Compare the lower bound of the bootstrap 95% CI instead of the value."))]
AuditDir = Annotated[Path, typer.Argument(help=(
    "Audit folder holding results.json (or a root's audit folder holding summary.json)."))]
ReportOut = Annotated[Path | None, typer.Option("--out", "-o", help=(
    "HTML file to write (default: AUDIT_DIR/report.html)."))]
IncludePaths = Annotated[bool, typer.Option("--include-paths", help=(
    "Show absolute local paths (default: base names only)."))]
Compare = Annotated[list[Path] | None, typer.Option("--compare", metavar="AUDIT_DIR", help=(
    "Another audit folder to show side by side (repeatable)."))]
DemoOut = Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")]
DemoPreset = Annotated[str, typer.Option("--preset", help="tiny | lite.")]
DemoEpochs = Annotated[int | None, typer.Option("--epochs", help=(
    "Epochs per model (demo default)."))]
DemoTrain = Annotated[int, typer.Option("--n-train", help="Synthetic training images.")]
DemoTest = Annotated[int, typer.Option("--n-test", help="Synthetic test images.")]
PlainSeed = Annotated[int, typer.Option("--seed", help="Random seed.")]
BaselineKind = Annotated[str, typer.Argument(help="patchcore | autoencoder.")]
BaselineData = Annotated[Path, typer.Argument(help=(
    "Dataset category folder (or a root with --category)."))]
BaselineOut = Annotated[Path, typer.Option("--out", "-o", help="Baseline checkpoint to write.")]
BaselineSize = Annotated[int, typer.Option("--image-size", help="Input side in pixels (x16).")]
Coreset = Annotated[float, typer.Option("--coreset", help=(
    "PatchCore: fraction of training patch features kept."))]
Sampler = Annotated[str, typer.Option("--sampler", help="PatchCore coreset: greedy | random.")]
BaselineEpochs = Annotated[int | None, typer.Option("--epochs", help=(
    "Autoencoder epochs (default 40)."))]
MaxTrain = Annotated[int | None, typer.Option("--max-train", help=(
    "Use at most this many training images."))]
BaselineDevice = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")]
# fmt: on
