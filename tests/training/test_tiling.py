"""``data.preprocess: tile``: native-resolution images cut into tiles, split by image, evaluated per image.

A folder dataset of 96x128 images tiled at 32: 3 x 4 = 12 tiles per image without overlap, 4 x 5 = 20 at
stride 24 (the last row and column end at the border). Splits are drawn over images and patient groups, so
no image and no group has tiles in two sets; the test evaluation segments each whole image by sliding window.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdseg.data.errors import DatasetError
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data
from fdseg.training.evaluate import predict
from fdseg.training.run import train_run

Tiny = Callable[..., ExperimentConfig]
HEIGHT, WIDTH, TILE = 96, 128, 32


def _folder(root: Path, n: int, *, seed: int, prefix: str = "p") -> Path:
    """``n`` images of 96x128 with disc-shaped nuclei; ids ``<prefix><patient>_<k>``, two per patient."""
    if root.is_dir():
        return root
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for i in range(n):
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for _ in range(12):
            cy, cx, r = rng.integers(0, HEIGHT), rng.integers(0, WIDTH), rng.integers(4, 9)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = rng.integers(150, 230, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[mask] = rng.integers(40, 90, size=(int(mask.sum()), 3), dtype=np.uint8)
        stem = f"{prefix}{i // 2}_{i % 2}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    return root


def _config(tmp: Path, tiny: Tiny, **data: object) -> ExperimentConfig:
    base = _folder(tmp / "base", 10, seed=0)
    novel = _folder(tmp / "novel", 4, seed=1, prefix="n")
    return tiny(
        tmp,
        data={
            "base": f"folder:{base}?group_pattern=^(p\\d+)_",
            "novel": f"folder:{novel}",
            "novel_k": 2,
            "image_size": TILE,
            "preprocess": "tile",
            "cache_dir": str(tmp / "cache"),
            **data,
        },
    )


@pytest.mark.parametrize(("stride", "per_image"), [(None, 12), (24, 20)])
def test_tiles_are_counted_and_split_by_image_and_group(
    tmp_path_factory: pytest.TempPathFactory, tiny: Tiny, stride: int | None, per_image: int
) -> None:
    tmp = tmp_path_factory.getbasetemp() / "tiling"
    run = tmp_path_factory.mktemp("run")
    cfg = _config(tmp, tiny, tile_stride=stride)
    data = build_run_data(cfg, run)
    assert data.tiled and len(data.base) == 10 * per_image and data.novel is not None

    # the cache gives every tile its image's patient group, so grouped splits of tiles could not leak either
    assert data.base.groups == [i.partition("_")[0] for i in data.base.ids]

    saved = json.loads((run / "split.json").read_text())["sources"]
    image_sets = {name: set(saved["base"]["sets"][name]) for name in ("train", "val", "test")}
    assert set().union(*image_sets.values()) == {f"p{i // 2}_{i % 2}" for i in range(10)}
    assert sum(len(s) for s in image_sets.values()) == 10  # disjoint sets of whole images
    assert saved["novel"]["sets"]["train"] == ["n0_0", "n0_1"]  # novel_k counts images: the first 2

    tile_sets: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        ids = [i for batch in data.eval_loader(name, 8) for i in batch["id"]]
        if name == "train":  # the pooled training set: base tiles and the novel images' tiles
            novel = [i for i in ids if i.startswith("novel/")]
            assert len(novel) == 2 * per_image
            ids = [i.removeprefix("base/") for i in ids if i not in novel]
        assert len(ids) == len(set(ids)) == per_image * len(image_sets[name])
        assert {i.rpartition("@")[0] for i in ids} == image_sets[name]
        tile_sets[name] = set(ids)
    assert not (tile_sets["train"] & tile_sets["val"] or tile_sets["train"] & tile_sets["test"])
    assert not tile_sets["val"] & tile_sets["test"]
    patients = {name: {i.partition("_")[0] for i in ids} for name, ids in image_sets.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"])
    assert not patients["val"] & patients["test"]

    train = data.train
    assert len(train) == data.n_train == per_image * (len(image_sets["train"]) + 2)
    sample = train[len(train) - 1]
    assert sample["source"] == 1 and sample["id"].startswith("novel/n0_1@")
    assert tuple(sample["image"].shape) == (3, TILE, TILE)

    # the whole test images are the native files, put back together from their tiles
    for image_id, image, mask in data.images("test"):
        native = np.asarray(Image.open(tmp / "base" / "images" / f"{image_id}.png").convert("RGB"))
        native_mask = np.asarray(Image.open(tmp / "base" / "masks" / f"{image_id}.png")) > 0
        np.testing.assert_array_equal(image, native)
        np.testing.assert_array_equal(mask, native_mask)


def test_tile_options_are_checked(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.preprocess.*'tile'"):
        tiny(tmp_path, data={"preprocess": "tiles"})
    with pytest.raises(ValueError, match=r"tile_stride is only used with data\.preprocess=tile"):
        tiny(tmp_path, data={"tile_stride": 16})
    with pytest.raises(ValueError, match=r"tile_stride must be in \[1, data\.image_size=32\]"):
        tiny(tmp_path, data={"preprocess": "tile", "tile_stride": 33})


def test_image_smaller_than_a_tile_is_named(tmp_path: Path, tiny: Tiny) -> None:
    cfg = _config(tmp_path, tiny, image_size=112)  # 112 > 96: the height cannot hold one tile
    with pytest.raises(
        DatasetError, match=r"p0_0\.png.*cannot tile: tile 112 is larger than the image side 96"
    ):
        build_run_data(cfg, tmp_path / "run")


def test_tiled_run_is_evaluated_per_native_image(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, tiny: Tiny
) -> None:
    tmp = tmp_path_factory.getbasetemp() / "tiling"
    cfg = _config(tmp, tiny, novel=None, novel_k=None).with_overrides(
        ["train.epochs_phase1=1", "train.epochs_phase2=1", "loss.layers=[enc1, bottleneck]"]
    )
    run = train_run(cfg, tmp_path / "run")
    summary = json.loads((run / "test" / "summary.json").read_text())
    test_ids = json.loads((run / "split.json").read_text())["sources"]["base"]["sets"]["test"]
    with (run / "test" / "per_sample.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert summary["mode"] == "sliding" and summary["n"] == len(rows) == len(test_ids)
    assert [r["id"] for r in rows] == test_ids
    for r in rows:  # one row per whole native image, its counts over all 96 x 128 pixels
        assert sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == HEIGHT * WIDTH
        assert int(r["tp"]) + int(r["fn"]) == int(
            (np.asarray(Image.open(tmp / "base" / "masks" / f"{r['id']}.png")) > 0).sum()
        )
        assert int(r["tiles"]) == 12
        assert np.isfinite(float(r["fd/enc1"]))

    # predict defaults to the sliding window for a tiled run, at native size
    image = tmp / "base" / "images" / f"{test_ids[0]}.png"
    (default,) = predict(run, [image], tmp_path / "default")
    (sliding,) = predict(run, [image], tmp_path / "sliding", mode="sliding")
    mask = np.asarray(Image.open(default))
    assert mask.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, np.asarray(Image.open(sliding)))
    # and the per-image evaluation counted exactly the mask predict writes
    assert int(
        ((mask > 0) & (np.asarray(Image.open(image.parents[1] / "masks" / image.name)) > 0)).sum()
    ) == int(rows[0]["tp"])
