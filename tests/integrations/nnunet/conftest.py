"""Shared data for the nnU-Net integration tests: tiny synthetic sites, one planned export, helpers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from fdseg.data import write_synthetic

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
#: Real data beside the repository (``../shared/data``), or wherever ``FDSEG_SHARED_DATA`` points.
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
TNBC = SHARED_DATA / "tnbc" / "TNBC_NucleiSegmentation"
HAS_NNUNET = importlib.util.find_spec("nnunetv2") is not None
NO_NNUNET = (
    'nnunetv2 is not installed here: pip install "fdseg[nnunet]" (make test-nnunet runs these tests in '
    ".venv-nnunet)"
)
needs_nnunet = pytest.mark.skipif(not HAS_NNUNET, reason=NO_NNUNET)


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m fdseg.cli ARGS`` in a fresh process (nnU-Net's multiprocessing needs a real __main__)."""
    full_env = {**os.environ, "PYTHONPATH": str(SRC), "nnUNet_def_n_proc": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fdseg.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Sites:
    base: str
    novel: str


@pytest.fixture(scope="session")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Sites:
    """A base site of 12 and a shifted novel site of 6 synthetic 32² RGB images (folder specs)."""
    root = tmp_path_factory.mktemp("sites")
    write_synthetic(root / "base", "nuclei", "base", 12, seed=0, size=32)
    write_synthetic(root / "novel", "nuclei", "dil2", 6, seed=1, size=32)
    return Sites(base=f"folder:{root / 'base'}", novel=f"folder:{root / 'novel'}")


@dataclass(frozen=True)
class Planned:
    raw: Path
    preprocessed: Path
    results: Path
    dataset: Path
    dataset_id: int

    def roots(self) -> list[str]:
        return [
            "--raw",
            str(self.raw),
            "--preprocessed",
            str(self.preprocessed),
            "--results",
            str(self.results),
        ]


@pytest.fixture(scope="session")
def planned(sites: Sites, tmp_path_factory: pytest.TempPathFactory) -> Planned:
    """The synthetic base + 4 novel images exported as Dataset903_Tiny, planned and preprocessed (2d)."""
    if not HAS_NNUNET:
        pytest.skip(NO_NNUNET)
    root = tmp_path_factory.mktemp("nnunet")
    raw, pre, res = root / "raw", root / "preprocessed", root / "results"
    export = run_cli(
        ["nnunet", "export", sites.base, "--novel", sites.novel, "--novel-k", "4", "--dataset-id", "903",
         "--name", "Tiny", "-o", str(raw)]
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    plan = run_cli(
        ["nnunet", "plan", "903", "--intensity-samples", "10000", "--raw", str(raw),
         "--preprocessed", str(pre), "--results", str(res)]
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    return Planned(raw, pre, res, raw / "Dataset903_Tiny", 903)
