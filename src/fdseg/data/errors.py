"""Dataset errors: each names the file (or folder) and the problem."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A problem with a dataset on disk; ``path`` is the file or folder concerned."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root (or an expected sub-folder) does not exist."""

    def __init__(self, path: str | Path, expected: str) -> None:
        self.path = Path(path)
        super().__init__(f"dataset not found at {self.path}: expected {expected}")


class SplitError(ValueError):
    """A split that cannot be used (an empty set, an unknown id, a path outside the dataset root)."""
