"""``fdseg nnunet …``: export datasets to nnU-Net v2, plan, train with L_fd, predict, collect results.

Every command but ``export`` and ``collect`` needs the optional extra (``pip install "fdseg[nnunet]"``).
nnU-Net reads its folders from the environment variables ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results`` when it is imported; the ``--raw``/``--preprocessed``/``--results`` options set them
before the import.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fdseg.cli import _echo, app

nnunet_app = typer.Typer(
    help="nnU-Net v2 with L_fd: export, plan, train, predict, collect.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(nnunet_app, name="nnunet")

_ROOT_HELP = "nnU-Net's {what} folder (default: ${env})."
RawOpt = Annotated[Path | None, typer.Option("--raw", help=_ROOT_HELP.format(what="raw", env="nnUNet_raw"))]
PreprocessedOpt = Annotated[
    Path | None,
    typer.Option("--preprocessed", help=_ROOT_HELP.format(what="preprocessed", env="nnUNet_preprocessed")),
]
ResultsOpt = Annotated[
    Path | None, typer.Option("--results", help=_ROOT_HELP.format(what="results", env="nnUNet_results"))
]


def _roots(raw: Path | None, preprocessed: Path | None, results: Path | None) -> None:
    from fdseg.integrations.nnunet_env import set_roots

    set_roots(raw=raw, preprocessed=preprocessed, results=results)


@nnunet_app.command("export")
def export(
    spec: Annotated[str, typer.Argument(help="Base dataset spec NAME:PATH[?opt=v], any format fdseg reads.")],
    dataset_id: Annotated[int, typer.Option("--dataset-id", help="nnU-Net dataset id, 1..999.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name (letters, digits, '-').")],
    out: Annotated[Path, typer.Option("--out", "-o", help="nnU-Net raw folder to write into.")],
    novel: Annotated[
        str | None, typer.Option("--novel", help="Novel dataset spec; its images join training only.")
    ] = None,
    novel_k: Annotated[
        int | None, typer.Option("--novel-k", help="Number of novel images (first k by id; default all).")
    ] = None,
    split: Annotated[
        Path | None, typer.Option("--split", help="Reuse an fdseg split.json (e.g. runs/x/split.json).")
    ] = None,
    split_scheme: Annotated[str, typer.Option(help="code or paper (without --split).")] = "code",
    split_seed: Annotated[int, typer.Option(help="Split seed (without --split).")] = 35,
    labels: Annotated[str, typer.Option(help="binary (0/1) or classes (0..K class maps).")] = "binary",
) -> None:
    """Write DatasetXXX_Name/ in nnU-Net's raw layout with splits_final.json from fdseg's split."""
    from fdseg.integrations.nnunet_export import export_nnunet

    result = export_nnunet(
        spec,
        out,
        dataset_id=dataset_id,
        name=name,
        novel=novel,
        novel_k=novel_k,
        split_file=split,
        split_scheme=split_scheme,
        split_seed=split_seed,
        labels=labels,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    _echo(f"{result.folder}: {counts} ({result.channels} channel(s), labels {result.labels})")


@nnunet_app.command("plan")
def plan(
    dataset_id: Annotated[int, typer.Argument(help="Dataset id (as exported).")],
    configuration: Annotated[
        str, typer.Option("--configuration", "-c", help="Configuration to preprocess (2d for 2D images).")
    ] = "2d",
    processes: Annotated[int, typer.Option(help="Worker processes for fingerprint and preprocessing.")] = 1,
    verify: Annotated[bool, typer.Option(help="Run nnU-Net's dataset integrity check first.")] = True,
    intensity_samples: Annotated[
        int | None,
        typer.Option(help="Foreground intensities the fingerprint samples (nnU-Net: 1e8; slow on CPU)."),
    ] = None,
    raw: RawOpt = None,
    preprocessed: PreprocessedOpt = None,
    results: ResultsOpt = None,
) -> None:
    """nnU-Net's plan-and-preprocess with CPU-safe settings; installs fdseg's split as splits_final.json."""
    _roots(raw, preprocessed, results)
    from fdseg.integrations.nnunet_env import require_nnunet

    require_nnunet()
    from fdseg.integrations.nnunet import plan_and_preprocess

    start = time.perf_counter()
    folder = plan_and_preprocess(
        dataset_id,
        configuration=configuration,
        processes=processes,
        verify=verify,
        intensity_samples=intensity_samples,
    )
    _echo(f"planned and preprocessed in {time.perf_counter() - start:.1f} s: {folder}")


@nnunet_app.command("train")
def train(
    dataset: Annotated[str, typer.Argument(help="Dataset id or name (901 or Dataset901_TNBC).")],
    configuration: Annotated[str, typer.Argument(help="Configuration, e.g. 2d.")],
    fold: Annotated[str, typer.Argument(help="Fold (0 is fdseg's split) or 'all'.")],
    trainer: Annotated[str, typer.Option(help="FD, FDExch or base (nnU-Net's own trainer).")] = "FD",
    lambda_max: Annotated[
        float | None, typer.Option("--lambda-max", help="λ_max per layer after the warm-up (default 0.001).")
    ] = None,
    warmup_epochs: Annotated[
        int | None,
        typer.Option("--warmup-epochs", help="Epochs with λ = 0 (default: half of the epochs)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Number of epochs (nnU-Net: 1000).")] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", help="Training iterations per epoch (nnU-Net: 250).")
    ] = None,
    val_iterations: Annotated[
        int | None, typer.Option("--val-iterations", help="Validation iterations per epoch (nnU-Net: 50).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--c", "--continue", help="Continue from the latest checkpoint (nnU-Net's --c).")
    ] = False,
    plans: Annotated[str, typer.Option(help="Plans identifier.")] = "nnUNetPlans",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    validate: Annotated[
        bool, typer.Option(help="Predict the validation cases after training (nnU-Net's --val step).")
    ] = True,
    raw: RawOpt = None,
    preprocessed: PreprocessedOpt = None,
    results: ResultsOpt = None,
) -> None:
    """Train nnU-Net with L_fd (FD, FDExch) or without (base), constructing the trainer directly."""
    from fdseg.integrations.nnunet_env import check_train_options

    settings = check_train_options(trainer, lambda_max=lambda_max, warmup_epochs=warmup_epochs)
    _roots(raw, preprocessed, results)
    from fdseg.integrations.nnunet_env import require_nnunet

    require_nnunet()
    from fdseg.integrations.nnunet import train_nnunet

    start = time.perf_counter()
    folder = train_nnunet(
        dataset,
        configuration,
        fold,
        trainer=trainer,
        fd_settings=settings,
        epochs=epochs,
        iterations=iterations,
        val_iterations=val_iterations,
        resume=resume,
        plans=plans,
        device=device,
        validate=validate,
    )
    _echo(f"trained in {time.perf_counter() - start:.1f} s: {folder}")


@nnunet_app.command("predict")
def predict(
    model: Annotated[
        Path, typer.Argument(help="A trained fold folder (…/<trainer>__<plans>__<config>/fold_0).")
    ],
    images: Annotated[Path, typer.Argument(help="Folder of <case>_0000.png images (e.g. imagesTs).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the predicted <case>.png labels.")],
    checkpoint: Annotated[str, typer.Option(help="checkpoint_final.pth or checkpoint_best.pth.")] = (
        "checkpoint_final.pth"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mirroring: Annotated[bool, typer.Option(help="Test-time mirroring (off: 4x faster in 2D).")] = True,
) -> None:
    """Predict with a trained fold (no trainer-class lookup, so it works where nnUNetv2_predict cannot)."""
    from fdseg.integrations.nnunet_env import require_nnunet

    require_nnunet()
    from fdseg.integrations.nnunet import predict_folder

    paths = predict_folder(model, images, out, checkpoint=checkpoint, device=device, mirroring=mirroring)
    _echo(f"{len(paths)} predictions written to {out}")


@nnunet_app.command("collect")
def collect(
    predictions: Annotated[
        Path, typer.Argument(help="Folder of predicted <case>.png (e.g. fold_0/validation).")
    ],
    dataset: Annotated[Path, typer.Option("--dataset", help="The exported raw Dataset<ID>_<Name> folder.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run-like folder to write <split>/per_sample.csv.")
    ],
    split: Annotated[str, typer.Option(help="test (imagesTs) or val (fold 0's validation cases).")] = "test",
    arm: Annotated[
        str | None,
        typer.Option(help="Arm name in fdseg compare (default nnunet:<trainer> for a fold's folder)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed recorded for pairing with fdseg runs.")] = 0,
) -> None:
    """Score nnU-Net predictions per image into <out>/<split>/per_sample.csv (fdseg's result table)."""
    from fdseg.integrations.nnunet_results import collect_nnunet_results

    summary = collect_nnunet_results(predictions, dataset, out, split=split, arm=arm, seed=seed)
    mean = summary["mean"]
    _echo(f"{split}: n={summary['n']} dice={mean['dice']:.4f} iou={mean['iou']:.4f}")
    _echo(f"per-sample table: {Path(out) / split / 'per_sample.csv'} (fdseg compare {out} …)")


@nnunet_app.command("trainer-dir")
def trainer_dir() -> None:
    """Print the folder to put in nnUNet_extTrainer so that nnUNetv2_train -tr nnUNetTrainerFD finds it."""
    from fdseg.integrations.nnunet_env import EXT_TRAINER_DIR

    _echo(str(EXT_TRAINER_DIR))
