"""fdseg nnunet export: nnU-Net's raw layout, fdseg's split as fold 0, nnU-Net's own integrity check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SRC, TNBC, Sites, needs_nnunet, run_cli
from fdseg.data import SourceSplit, open_dataset, save_splits, split_dataset
from fdseg.integrations.nnunet_export import export_nnunet


def _verify(folder: Path) -> None:
    """nnU-Net's own dataset integrity check (raises on any problem)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), 1)


class _Ids:
    def __init__(self, spec: str) -> None:
        raw = open_dataset(spec)
        self.ids = [r.id for r in raw.records]
        self.groups = [r.group for r in raw.records]
        self._official = raw.official_split()

    def official_split(self) -> dict[str, list[str]] | None:
        return self._official


def test_export_pool_layout_split_and_pixels(sites: Sites, tmp_path: Path) -> None:
    result = export_nnunet(sites.base, tmp_path, dataset_id=905, name="Pool", novel=sites.novel, novel_k=4)
    folder = tmp_path / "Dataset905_Pool"
    assert result.folder == folder
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["labels"] == {"background": 0, "foreground": 1}
    assert meta["file_ending"] == ".png"
    # fdseg's default split of the base (code scheme, seed 35): 12 images -> test 2, val 2, train 8
    expected = split_dataset(_Ids(sites.base), scheme="code", seed=35)
    novel_ids = sorted(r.id for r in open_dataset(sites.novel).records)[:4]
    assert result.counts == {"train": 8, "val": 2, "novel": 4, "test": 2}
    assert meta["numTraining"] == 14
    cases = meta["fdseg"]["cases"]
    tr = sorted(p.name for p in (folder / "imagesTr").iterdir())
    ts = sorted(p.name for p in (folder / "imagesTs").iterdir())
    assert len(tr) == 14 and len(ts) == 2 and all(n.endswith("_0000.png") for n in tr + ts)
    labels = sorted(p.name for p in (folder / "labelsTr").iterdir())
    assert labels == [n[: -len("_0000.png")] + ".png" for n in tr]
    (fold,) = json.loads((folder / "splits_final.json").read_text())
    wanted = (("train", "train", "base"), ("val", "val", "base"), ("novel", "train", "novel"))
    by_set = {s: sorted(cases[c]["id"] for c in fold[k] if cases[c]["source"] == src) for s, k, src in wanted}
    assert by_set["train"] == sorted(expected.train)
    assert by_set["val"] == sorted(expected.val_ids)
    assert by_set["novel"] == novel_ids
    assert not any(cases[c]["source"] == "novel" for c in fold["val"])  # novel images: training only
    test_cases = sorted(c for c, info in cases.items() if info["set"] == "test")
    assert sorted(cases[c]["id"] for c in test_cases) == sorted(expected.test_ids)
    assert sorted(f"{c}_0000.png" for c in test_cases) == ts
    # pixels: one 3-channel PNG per image, labels 0/1, identical to what fdseg decodes
    raw = open_dataset(sites.base)
    for case in test_cases:
        sample = raw.load_record(raw.by_id(cases[case]["id"]))
        with Image.open(folder / "imagesTs" / f"{case}_0000.png") as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), sample["image"])
        with Image.open(folder / "labelsTs" / f"{case}.png") as lab:
            label = np.asarray(lab)
        assert set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label.astype(bool), sample["mask"])


def test_export_reuses_a_saved_fdseg_split(sites: Sites, tmp_path: Path) -> None:
    ids = sorted(r.id for r in open_dataset(sites.base).records)
    novel_ids = sorted(r.id for r in open_dataset(sites.novel).records)
    split_file = save_splits(
        tmp_path / "split.json",
        {
            "base": SourceSplit(
                sets={"train": tuple(ids[:6]), "val": tuple(ids[6:9]), "test": tuple(ids[9:])}
            ),
            "novel": SourceSplit(sets={"train": (novel_ids[5],)}, scheme="custom"),
        },
    )
    result = export_nnunet(
        sites.base, tmp_path / "raw", dataset_id=906, name="Saved", novel=sites.novel, split_file=split_file
    )
    assert result.counts == {"train": 6, "val": 3, "novel": 1, "test": 3}
    cases = result.cases
    (fold,) = json.loads((result.folder / "splits_final.json").read_text())
    assert sorted(cases[c]["id"] for c in fold["val"]) == ids[6:9]
    assert [cases[c]["id"] for c in fold["train"] if cases[c]["source"] == "novel"] == [novel_ids[5]]


def test_reexport_of_the_same_sources_replaces_it(sites: Sites, tmp_path: Path) -> None:
    export_nnunet(sites.base, tmp_path, dataset_id=907, name="Again")
    result = export_nnunet(sites.base, tmp_path, dataset_id=907, name="Again", split_seed=3)
    assert result.folder.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset907_Again"]  # no temporary folder left behind


@pytest.mark.parametrize("dataset_id", [0, 1000, -5])
def test_dataset_id_outside_nnunet_range(sites: Sites, tmp_path: Path, dataset_id: int) -> None:
    with pytest.raises(ValueError, match=r"--dataset-id must be an integer in 1\.\.999"):
        export_nnunet(sites.base, tmp_path, dataset_id=dataset_id, name="X")
    assert not any(tmp_path.iterdir())


def test_folder_holding_another_dataset_is_refused(sites: Sites, tmp_path: Path) -> None:
    export_nnunet(sites.base, tmp_path, dataset_id=908, name="Held")
    before = sorted(p.name for p in (tmp_path / "Dataset908_Held" / "imagesTr").iterdir())
    with pytest.raises(FileExistsError, match="Dataset908_Held already holds another dataset"):
        export_nnunet(sites.novel, tmp_path, dataset_id=908, name="Held")
    assert sorted(p.name for p in (tmp_path / "Dataset908_Held" / "imagesTr").iterdir()) == before
    with pytest.raises(FileExistsError, match="already uses dataset id 908"):
        export_nnunet(sites.novel, tmp_path, dataset_id=908, name="Other")
    (tmp_path / "Dataset909_Hand").mkdir()
    (tmp_path / "Dataset909_Hand" / "dataset.json").write_text('{"name": "by hand"}')
    with pytest.raises(FileExistsError, match="files not written by fdseg"):
        export_nnunet(sites.base, tmp_path, dataset_id=909, name="Hand")


def test_channel_counts_differing_within_a_dataset(sites: Sites, tmp_path: Path) -> None:
    grey_novel = f"{sites.novel}?channels=1"
    with pytest.raises(ValueError, match=r"has 1 channels but .* has 3: nnU-Net needs one channel count"):
        export_nnunet(sites.base, tmp_path, dataset_id=910, name="Mixed", novel=grey_novel, novel_k=2)
    assert not any(tmp_path.iterdir())  # nothing written, not even the temporary folder


def test_cli_bad_input_is_one_line(sites: Sites, tmp_path: Path) -> None:
    bad_id = run_cli(
        ["nnunet", "export", sites.base, "--dataset-id", "1000", "--name", "X", "-o", str(tmp_path)]
    )
    assert bad_id.returncode == 1
    assert bad_id.stderr.strip().count("\n") == 0 and "1..999" in bad_id.stderr
    trainer = run_cli(["nnunet", "train", "903", "2d", "0", "--trainer", "fd"])
    assert trainer.returncode == 1
    assert trainer.stderr.strip() == (
        "error: unknown --trainer 'fd'; did you mean 'FD'? valid: ['FD', 'FDExch', 'base']"
    )
    base = run_cli(["nnunet", "train", "903", "2d", "0", "--trainer", "base", "--lambda-max", "0.1"])
    assert base.returncode == 1
    assert base.stderr.strip().startswith("error: --lambda-max only apply to the FD trainers")


def test_missing_extra_names_the_fix(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['nnunetv2'] = None\n"
        "from fdseg.cli import main\n"
        f"sys.exit(main(['nnunet', 'plan', '903', '--raw', {str(tmp_path)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nnU-Net v2 is not installed")
    assert lines[0].endswith('install the extra: pip install "fdseg[nnunet]"')


@needs_nnunet
def test_synthetic_pool_export_passes_nnunet_integrity_check(sites: Sites, tmp_path: Path) -> None:
    result = export_nnunet(sites.base, tmp_path, dataset_id=911, name="Check", novel=sites.novel, novel_k=3)
    _verify(result.folder)


@needs_nnunet
def test_broken_export_fails_nnunet_integrity_check(sites: Sites, tmp_path: Path) -> None:
    """The check is real: a label with a value outside dataset.json's labels makes it fail."""
    result = export_nnunet(sites.base, tmp_path, dataset_id=912, name="Broken")
    label = next((result.folder / "labelsTr").iterdir())
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(label)
    with pytest.raises((RuntimeError, AssertionError)):
        _verify(result.folder)


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_nnunet
@pytest.mark.skipif(
    not TNBC.is_dir(), reason=f"real TNBC files not found under {TNBC} (set FDSEG_SHARED_DATA)"
)
def test_real_tnbc_export_passes_nnunet_integrity_check(tmp_path: Path) -> None:
    spec = f"tnbc:{TNBC}"
    result = export_nnunet(spec, tmp_path, dataset_id=901, name="TNBC")
    expected = split_dataset(_Ids(spec), scheme="code", seed=35)  # slides kept whole, as fdseg train does
    assert result.counts == {k: len(expected[k]) for k in ("train", "val")} | {
        "novel": 0,
        "test": len(expected["test"]),
    }
    assert sum(result.counts.values()) == 50
    slide_sets: dict[str, set[str]] = {}
    for info in result.cases.values():
        slide_sets.setdefault(info["id"].split("_")[0], set()).add(info["set"])
    assert all(len(sets) == 1 for sets in slide_sets.values())  # no slide in two sets
    assert result.channels == 3  # 47 of the 50 files are RGBA: alpha dropped, one RGB PNG each
    with Image.open(next((result.folder / "imagesTr").iterdir())) as img:
        assert img.mode == "RGB" and img.size == (512, 512)
    _verify(result.folder)
