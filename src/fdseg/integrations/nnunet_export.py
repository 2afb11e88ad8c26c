"""Export any fdseg dataset (optionally pooled with novel images) to nnU-Net v2's raw dataset layout.

This module needs neither nnU-Net nor its dependencies: it decodes images with fdseg's loaders and writes
PNG files and JSON. The result is ``<out>/Dataset<ID>_<Name>/``::

    dataset.json          channel_names, labels, numTraining, file_ending ".png", plus an "fdseg" block
    imagesTr/<case>_0000.png   base train + base val + the selected novel images (RGB: one 3-channel PNG)
    labelsTr/<case>.png        uint8 labels 0/1 (binary) or 0..K (``labels="classes"``)
    imagesTs/, labelsTs/       the base test images
    splits_final.json          one fold: {"train": base train + novel, "val": base val}

The split is fdseg's own (:func:`fdseg.data.split_dataset`, the defaults of ``fdseg train``: scheme ``code``,
seed 35, groups kept together, an official split honoured) or one read from a run's ``split.json``, so
nnU-Net's fold 0 and an fdseg run see the same images; novel images are in training only, never in val or
test. nnU-Net reads ``splits_final.json`` from its *preprocessed* folder: ``fdseg nnunet plan`` copies it
there (with plain ``nnUNetv2_plan_and_preprocess``, copy it by hand after planning).

Case names are ``<source>_<id>`` with characters other than letters, digits and ``-`` replaced by ``-``;
``dataset.json["fdseg"]["cases"]`` maps every case back to its source, fdseg id and set, which
:mod:`fdseg.integrations.nnunet_results` uses to label nnU-Net's per-image results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import fdseg
from fdseg._checks import check_option
from fdseg.data import (
    RawDataset,
    SourceSplit,
    addition_schedule,
    check_split,
    load_splits,
    open_dataset,
    select_subset,
    split_dataset,
)

#: What ``labels=`` accepts: ``binary`` (the fdseg mask, 0/1) or ``classes`` (the class map, 0..K).
LABEL_MODES: tuple[str, ...] = ("binary", "classes")
#: The default split of ``fdseg train`` (``data.split_scheme`` and ``data.split_seed``).
DEFAULT_SPLIT_SCHEME = "code"
DEFAULT_SPLIT_SEED = 35
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_DATASET_DIR_RE = re.compile(r"^Dataset(\d{3})_(.+)$")
CHANNEL_NAMES: Mapping[int, dict[str, str]] = {3: {"0": "R", "1": "G", "2": "B"}, 1: {"0": "grey"}}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_nnunet` wrote.

    Attributes:
        folder: the ``Dataset<ID>_<Name>`` folder.
        counts: ``{"train", "val", "novel", "test"}`` -> number of cases.
        labels: nnU-Net's label map (name -> value).
        channels: image channels (3 for RGB, 1 for grey).
    """

    folder: Path
    counts: dict[str, int]
    labels: dict[str, int]
    channels: int
    cases: dict[str, dict[str, str]] = field(default_factory=dict)


class _View:
    """Image ids, groups and the official split of a raw dataset (what :func:`split_dataset` reads)."""

    def __init__(self, raw: RawDataset) -> None:
        self.ids = [r.id for r in raw.records]
        self.groups: list[str | None] = [r.group for r in raw.records]
        self._official = raw.official_split()

    def official_split(self) -> dict[str, list[str]] | None:
        return self._official


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID>_<Name>`` as nnU-Net names raw datasets.

    Args:
        dataset_id: 1..999.
        name: letters, digits and ``-`` (nnU-Net splits the folder name at the first ``_``).

    Raises:
        ValueError: an id outside 1..999 or a name with other characters.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id must be an integer in 1..999 (nnU-Net's range), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"--name {name!r} must start with a letter or digit and contain only letters, digits and '-' "
            "(nnU-Net folder names are Dataset<ID>_<Name>)"
        )
    return f"Dataset{dataset_id:03d}_{name}"


def _case_name(source: str, image_id: str) -> str:
    return f"{source}_{re.sub(r'[^A-Za-z0-9-]+', '-', image_id).strip('-') or 'image'}"


def _fdseg_block(folder: Path) -> Mapping[str, Any] | None:
    try:
        payload = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    block = payload.get("fdseg") if isinstance(payload, dict) else None
    return block if isinstance(block, Mapping) else None


def _check_destination(out: Path, folder_name: str, dataset_id: int, sources: Mapping[str, str]) -> None:
    """Refuse an id used by another dataset, or a folder that holds another dataset (before writing)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"-o {out} exists and is not a folder")
    if out.is_dir():
        for other in sorted(out.iterdir()):
            match = _DATASET_DIR_RE.match(other.name)
            if match and int(match.group(1)) == dataset_id and other.name != folder_name:
                raise FileExistsError(
                    f"{other} already uses dataset id {dataset_id}; choose another --dataset-id or remove it"
                )
    target = out / folder_name
    if not target.exists() or not any(target.iterdir()):
        return
    block = _fdseg_block(target)
    if block is None or dict(block.get("sources", {})) != dict(sources):
        held = dict(block.get("sources", {})) if block is not None else "files not written by fdseg"
        raise FileExistsError(
            f"{target} already holds another dataset ({held}); "
            "choose another --dataset-id/--name or remove it"
        )


def _novel_ids(raw: RawDataset, k: int | None) -> list[str]:
    ids = [r.id for r in raw.records]
    if k is None:
        k = addition_schedule(len(ids), [1.0])[0]
    return select_subset(ids, k)


def _base_split(
    raw: RawDataset, spec: str, split_file: Path | None, scheme: str, seed: int
) -> tuple[SourceSplit, list[str] | None]:
    """fdseg's split of the base dataset, and the novel ids of ``split_file`` (``None``: not given)."""
    view = _View(raw)
    if split_file is None:
        return split_dataset(view, scheme=scheme, seed=seed, spec=spec), None
    sources = load_splits(split_file)
    if "base" not in sources:
        raise ValueError(f"{split_file}: no 'base' source")
    check_split(sources["base"], view.ids, groups=view.groups, source="base")
    novel = list(sources["novel"]["train"]) if "novel" in sources else None
    return sources["base"], novel


def _label_array(sample: Mapping[str, Any], labels: str, where: Path) -> np.ndarray:
    if labels == "binary":
        return np.asarray(sample["mask"], dtype=bool).astype(np.uint8)
    if "classes" not in sample:
        raise ValueError(
            f"{where}: labels='classes' needs a dataset with class maps (e.g. consep); this one has binary "
            "masks only (use labels='binary')"
        )
    return np.asarray(sample["classes"], dtype=np.uint8)


def _label_names(raws: Sequence[RawDataset], max_label: int, labels: str) -> dict[str, int]:
    if labels == "binary":
        return {"background": 0, "foreground": 1}
    names: Sequence[str] | None = None
    for raw in raws:
        n_classes = getattr(raw, "n_classes", None)
        if n_classes is not None:
            from fdseg.data.formats import consep

            names = consep.CLASS_NAMES_4 if int(n_classes) == 4 else consep.CLASS_NAMES_7
            max_label = max(max_label, len(names) - 1)
    label_map: dict[str, int] = {}
    for value in range(max_label + 1):
        name = names[value] if names is not None and value < len(names) else f"class{value}"
        label_map["background" if value == 0 else name] = value
    return label_map


def export_nnunet(
    base: str,
    out: str | Path,
    *,
    dataset_id: int,
    name: str,
    novel: str | None = None,
    novel_k: int | None = None,
    split_file: str | Path | None = None,
    split_scheme: str = DEFAULT_SPLIT_SCHEME,
    split_seed: int = DEFAULT_SPLIT_SEED,
    labels: str = "binary",
) -> ExportResult:
    """Write ``base`` (plus ``novel_k`` images of ``novel``) as nnU-Net raw dataset ``Dataset<ID>_<Name>``.

    Args:
        base: fdseg dataset spec of the base site, e.g. ``"tnbc:/data/tnbc"`` (any format fdseg reads).
        out: nnU-Net's raw folder (``$nnUNet_raw``); created when missing.
        dataset_id: 1..999.
        name: letters, digits and ``-``.
        novel: spec of a novel site whose images join the training set only.
        novel_k: how many novel images (the first k in natural id order, as ``fdseg train``; default all).
        split_file: an fdseg ``split.json`` to reuse (its base sets and novel ids) instead of drawing one.
        split_scheme: ``code`` or ``paper`` (when no ``split_file``).
        split_seed: the seed of the split draw (when no ``split_file``).
        labels: ``binary`` (foreground = 1) or ``classes`` (the dataset's class map, 0..K).

    Returns:
        :class:`ExportResult`.

    Raises:
        ValueError: a bad id, name or option; images whose channel count differs within the dataset;
            ``novel_k`` without ``novel`` or larger than the novel pool.
        FileExistsError: the dataset id is used by another folder in ``out``, or the target folder holds
            another dataset.
        DatasetError / SplitError: unreadable files, or a split that leaves a set empty.

    Nothing appears under ``out`` unless the whole export succeeds: files are written to a temporary sibling
    folder and renamed into place (an earlier export of the same sources is replaced).
    """
    folder_name = dataset_folder_name(dataset_id, name)
    check_option("labels", labels, LABEL_MODES)
    if novel is None and novel_k is not None:
        raise ValueError("--novel-k needs --novel SPEC (the dataset the novel images come from)")
    if novel_k is not None and novel_k < 0:
        raise ValueError(f"--novel-k must be >= 0, got {novel_k}")
    out = Path(out)
    sources = {"base": base, **({"novel": novel} if novel is not None else {})}
    _check_destination(out, folder_name, dataset_id, sources)

    base_raw = open_dataset(base)
    novel_raw = open_dataset(novel) if novel is not None else None
    split, saved_novel = _base_split(
        base_raw, base, Path(split_file) if split_file else None, split_scheme, split_seed
    )
    novel_ids: list[str] = []
    if novel_raw is not None:
        if saved_novel is not None and novel_k is None:
            novel_ids = saved_novel
            unknown = sorted(set(novel_ids) - {r.id for r in novel_raw.records})
            if unknown:
                raise ValueError(f"{split_file}: novel ids {unknown[:5]} are not images of {novel}")
        else:
            novel_ids = _novel_ids(novel_raw, novel_k)
    plan: list[tuple[str, RawDataset, str, str]] = []  # (source, dataset, id, set)
    for set_name in ("train", "val", "test"):
        plan.extend(("base", base_raw, image_id, set_name) for image_id in split[set_name])
    if novel_raw is not None:
        plan.extend(("novel", novel_raw, image_id, "novel") for image_id in novel_ids)

    cases: dict[str, dict[str, str]] = {}
    case_of: list[str] = []
    for source, _raw, image_id, set_name in plan:
        case = _case_name(source, image_id)
        stem, n = case, 2
        while case in cases:
            case, n = f"{stem}-{n}", n + 1
        cases[case] = {"source": source, "id": image_id, "set": set_name}
        case_of.append(case)

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", dir=out))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        channels: int | None = None
        first_file: Path | None = None
        max_label = 1
        for (_source, raw, image_id, set_name), case in zip(plan, case_of):
            record = raw.by_id(image_id)
            sample = raw.load_record(record)
            image = np.asarray(sample["image"], dtype=np.uint8)
            c = 1 if image.ndim == 2 else int(image.shape[2])
            if c not in CHANNEL_NAMES:
                raise ValueError(f"{record.image}: {c} image channels; nnU-Net export supports 1 or 3")
            if channels is None:
                channels, first_file = c, record.image
            elif c != channels:
                raise ValueError(
                    f"{record.image} has {c} channels but {first_file} has {channels}: nnU-Net needs one "
                    "channel count per dataset (open the datasets with the same channels option)"
                )
            label = _label_array(sample, labels, record.image)
            max_label = max(max_label, int(label.max(initial=0)))
            suffix = "Ts" if set_name == "test" else "Tr"
            pixels = image[..., 0] if c == 1 and image.ndim == 3 else image
            Image.fromarray(pixels).save(tmp / f"images{suffix}" / f"{case}_0000.png")
            Image.fromarray(label).save(tmp / f"labels{suffix}" / f"{case}.png")
        label_map = _label_names([r for r in (base_raw, novel_raw) if r is not None], max_label, labels)
        counts = {
            "train": len(split["train"]),
            "val": len(split["val"]),
            "novel": len(novel_ids),
            "test": len(split["test"]),
        }
        fold = {
            "train": [c for c, meta in cases.items() if meta["set"] in ("train", "novel")],
            "val": [c for c, meta in cases.items() if meta["set"] == "val"],
        }
        dataset_json = {
            "name": name,
            "description": f"exported by fdseg {fdseg.__version__} from {', '.join(sources.values())}",
            "channel_names": CHANNEL_NAMES[channels or 3],
            "labels": label_map,
            "numTraining": counts["train"] + counts["val"] + counts["novel"],
            "file_ending": ".png",
            "overwrite_image_reader_writer": "NaturalImage2DIO",
            "fdseg": {
                "version": fdseg.__version__,
                "sources": sources,
                "labels": labels,
                "split": {"scheme": split.scheme, "seed": split.seed, "file": str(split_file or "")},
                "counts": counts,
                "cases": cases,
            },
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=1) + "\n")
        (tmp / "splits_final.json").write_text(json.dumps([fold], indent=1) + "\n")
        target = out / folder_name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(target, counts, label_map, channels or 3, cases)
