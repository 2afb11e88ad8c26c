"""Deterministic, grouped, saved train/val/test splits (``split.json``).

Two schemes (``method-spec.md`` §D3), ratios configurable:

- ``code`` (default, the released code): test = ⌈test·n⌉ with test = 0.1, then val = ⌈val·(n − n_test)⌉ with
  val = 0.2 *of the rest*; TNBC's 50 images give 36/9/5 and UDIAT's 163 give 116/30/17, as in the code.
- ``paper`` ("70-20-10 train-test-validation"): test = ⌈0.2·n⌉ and val = ⌈0.1·n⌉, both *of the total*.

Rounding up follows scikit-learn's ``train_test_split``. With groups (patient/slide/WSI) whole groups are
assigned, so no group is in two sets: the groups are walked in a seeded random order and one joins test
only if it brings test's size closer to its target (``|n + g − t| < |n − t|``), then the groups left are
walked again for val, and the rest go to train. Test and val so end within one group of their targets
(never more than one group over, at most half a group under), and each set gets at least one group
whenever there are at least three (see :func:`_assign`). Without groups every id is its own group and the
counts are exact.

An official split is honoured: its ``test`` (and ``val`` if any) are kept and val is carved out of its
``train``; an official split without a test set (e.g. MoNuSeg's training folder alone, every record
``train``) is drawn from like a dataset without one. Ids are ordered naturally before shuffling, so the
split depends only on the set of ids, the groups, the scheme, the ratios and the seed.

A split file holds one split per *source* (``base``, ``novel``, …)::

    {"schema": 1, "sources": {"base": {"spec": "tnbc:…", "scheme": "code", "seed": 35, "test": 0.1,
     "val": 0.2, "grouped": true, "official": false, "sets": {"train": [...], "val": [...], "test": [...]}}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fdseg._checks import check_option
from fdseg._io import atomic_write_text
from fdseg.data.base import natural_key
from fdseg.data.errors import SplitError

SPLIT_SCHEMA = 1
SCHEMES: tuple[str, ...] = ("code", "paper")
SET_NAMES: tuple[str, ...] = ("train", "val", "test")
#: scheme -> (test, val) defaults; ``val`` is of the rest for ``code`` and of the total for ``paper``.
DEFAULT_RATIOS: dict[str, tuple[float, float]] = {"code": (0.1, 0.2), "paper": (0.2, 0.1)}


class SplittableDataset(Protocol):
    """What :func:`split_dataset` needs: item ids, their groups and the official split."""

    @property
    def ids(self) -> list[str]: ...

    @property
    def groups(self) -> list[str | None]: ...

    def official_split(self) -> dict[str, list[str]] | None: ...


@dataclass(frozen=True)
class SourceSplit:
    """The ids of one source in each set, and how they were drawn.

    Attributes:
        sets: set name (``train``/``val``/``test``) -> ids in natural order.
        spec: the dataset spec the ids belong to (informational).
        scheme: ``code`` | ``paper`` | ``custom`` (hand-made).
        seed: the seed of the draw.
        test: the test ratio used.
        val: the val ratio used (of the rest for ``code``, of the total for ``paper``).
        grouped: whether groups were kept together.
        official: whether an official split was honoured (official test or val ids were kept).
    """

    sets: Mapping[str, tuple[str, ...]]
    spec: str = ""
    scheme: str = "code"
    seed: int = 0
    test: float = 0.1
    val: float = 0.2
    grouped: bool = False
    official: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return tuple(self.sets.get(name, ()))

    @property
    def train(self) -> tuple[str, ...]:
        """Training ids."""
        return self["train"]

    @property
    def val_ids(self) -> tuple[str, ...]:
        """Validation ids."""
        return self["val"]

    @property
    def test_ids(self) -> tuple[str, ...]:
        """Test ids."""
        return self["test"]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "spec": self.spec,
            "scheme": self.scheme,
            "seed": self.seed,
            "test": self.test,
            "val": self.val,
            "grouped": self.grouped,
            "official": self.official,
            "meta": dict(self.meta),
            "sets": {name: list(ids) for name, ids in self.sets.items()},
        }


def _counts(n: int, scheme: str, test: float, val: float) -> tuple[int, int]:
    n_test = math.ceil(round(test * n, 9))
    rest = n - n_test
    n_val = math.ceil(round(val * (rest if scheme == "code" else n), 9))
    return n_test, n_val


def _assign(
    units: list[tuple[str, list[str]]], targets: Sequence[tuple[str, int]], rng: np.random.Generator
) -> dict[str, list[str]]:
    """Fill the targeted sets in turn from seeded-shuffled units (group, ids); the rest goes to train.

    For each set (in the order of ``targets``) the units left are walked in one seeded order and a unit
    joins the set only if it brings the set's size ``n`` closer to its target ``t``
    (``|n + g - t| < |n - t|`` for a unit of ``g`` ids), so a set ends within half a unit below or less
    than one unit above its target. Enough units are always left for the later sets and train to get one
    each; a set that no unit brings closer (every unit is at least twice its target) gets the smallest
    unit left (the first in the seeded order among equals), so no set is empty when there are at least as
    many units as sets.
    """
    left = [units[int(idx)] for idx in rng.permutation(len(units))]
    out: dict[str, list[str]] = {name: [] for name, _ in targets}
    out.setdefault("train", [])
    for k, (name, target) in enumerate(targets):
        reserve = len(targets) - k  # one unit for each later set and for train
        chosen: list[int] = []
        size = 0
        for pos, (_group, ids) in enumerate(left):
            if len(left) - len(chosen) <= reserve:
                break
            if abs(size + len(ids) - target) < abs(size - target):
                chosen.append(pos)
                size += len(ids)
        if not chosen and target > 0 and len(left) > reserve:
            chosen.append(min(range(len(left)), key=lambda pos: len(left[pos][1])))
        for pos in chosen:
            out[name].extend(left[pos][1])
        taken = set(chosen)
        left = [unit for pos, unit in enumerate(left) if pos not in taken]
    for _group, ids in left:
        out["train"].extend(ids)
    return out


def _units(ids: Sequence[str], groups: Sequence[str | None] | None) -> list[tuple[str, list[str]]]:
    """(group key, ids) in natural order; an id without a group is its own unit."""
    by_group: dict[str, list[str]] = {}
    for i, item in enumerate(ids):
        group = groups[i] if groups is not None else None
        key = f"group:{group}" if group is not None else f"id:{item}"
        by_group.setdefault(key, []).append(item)
    return [
        (k, sorted(v, key=natural_key))
        for k, v in sorted(by_group.items(), key=lambda kv: natural_key(kv[0]))
    ]


def make_split(
    ids: Sequence[str],
    *,
    groups: Sequence[str | None] | None = None,
    official: Mapping[str, Sequence[str]] | None = None,
    scheme: str = "code",
    seed: int = 0,
    test: float | None = None,
    val: float | None = None,
    spec: str = "",
) -> SourceSplit:
    """Draw a deterministic train/val/test split.

    Args:
        ids: unique item ids.
        groups: one group key per id (``None`` entries are their own group); ``None`` for no grouping.
        official: an official split (``{"train": [...], "test": [...]}``, optionally ``val``) to honour:
            its test and val ids are kept; a missing val is drawn from the rest with ratio ``val`` (of the
            rest, both schemes), and a missing test with the scheme's ratios as without an official split.
        scheme: ``code`` or ``paper`` (see the module docstring).
        seed: the seed of the draw.
        test: test ratio in (0, 1) (default per scheme); ignored when ``official`` has a test set.
        val: val ratio in (0, 1) (default per scheme; of the rest for ``code``, of the total for ``paper``).
        spec: the dataset spec, recorded in the result.

    Returns:
        The split; every set is non-empty.

    Raises:
        ValueError: a bad scheme or ratio, duplicate ids, or ``groups`` of the wrong length.
        SplitError: an official split naming unknown ids, or a set that would be empty.
    """
    check_option("split scheme", scheme, SCHEMES)
    default_test, default_val = DEFAULT_RATIOS[scheme]
    test = default_test if test is None else float(test)
    val = default_val if val is None else float(val)
    for name, ratio in (("test", test), ("val", val)):
        if not 0 < ratio < 1:
            raise ValueError(f"split ratio {name} must be in (0, 1), got {ratio}")
    if scheme == "paper" and test + val >= 1:
        raise ValueError(f"paper split: test + val must be < 1, got {test} + {val}")
    if len(set(ids)) != len(ids):
        raise ValueError("split ids must be unique")
    if groups is not None and len(groups) != len(ids):
        raise ValueError(f"{len(groups)} groups for {len(ids)} ids")
    grouped = groups is not None and any(g is not None for g in groups)
    rng = np.random.default_rng(seed)
    group_of = dict(zip(ids, groups)) if groups is not None else {}

    fixed: dict[str, list[str]] = {name: [] for name in SET_NAMES}
    if official:
        unknown = sorted(set().union(*map(set, official.values())) - set(ids), key=natural_key)
        if unknown:
            raise SplitError(f"official split names unknown ids {unknown[:5]}")
        check_official = [k for k in official if k not in SET_NAMES]
        if check_official:
            raise SplitError(
                f"official split has unknown set names {check_official}; valid: {list(SET_NAMES)}"
            )
        fixed = {name: sorted(official.get(name, ()), key=natural_key) for name in SET_NAMES}
    taken = {i for name in ("val", "test") for i in fixed[name]}
    pool = [i for i in ids if i not in taken]
    pool_units = _units(pool, [group_of.get(i) for i in pool] if groups is not None else None)
    drawn = [name for name in ("test", "val") if not fixed[name]]
    if len(pool_units) < len(drawn) + 1:
        raise SplitError(
            f"{len(pool)} items in {len(pool_units)} group(s) cannot fill the {', '.join(['train', *drawn])} "
            "sets with at least one whole group each (an id without a group is its own group); "
            "use a larger dataset"
        )
    sets: dict[str, list[str]]
    if fixed["test"] and fixed["val"]:
        sets = {"test": fixed["test"], "val": fixed["val"], "train": pool}
    elif fixed["test"]:
        n_val = math.ceil(round(val * len(pool), 9))
        sets = _assign(pool_units, [("val", n_val)], rng)
        sets["test"] = fixed["test"]
    elif fixed["val"]:
        n_test, _ = _counts(len(ids), scheme, test, val)
        sets = _assign(pool_units, [("test", n_test)], rng)
        sets["val"] = fixed["val"]
    else:  # no official split, or one with only a training set: drawn as without one
        n_test, n_val = _counts(len(ids), scheme, test, val)
        sets = _assign(pool_units, [("test", n_test), ("val", n_val)], rng)

    result = SourceSplit(
        sets={name: tuple(sorted(sets.get(name, []), key=natural_key)) for name in SET_NAMES},
        spec=spec,
        scheme=scheme,
        seed=seed,
        test=test,
        val=val,
        grouped=grouped,
        official=bool(taken),
    )
    check_split(result, ids, groups=groups)
    return result


def make_folds(
    ids: Sequence[str],
    k: int,
    *,
    groups: Sequence[str | None] | None = None,
    seed: int = 0,
) -> list[tuple[str, ...]]:
    """Partition ``ids`` into ``k`` cross-validation test folds, whole groups (patients/slides) per fold.

    The groups are taken largest first (ties in a seeded random order) and each goes to the fold that holds
    the fewest ids so far (ties: the lowest fold index), so fold sizes differ by at most one group. The folds
    are disjoint and together cover every id exactly once; no group is split between folds.

    Args:
        ids: unique item ids.
        k: number of folds, >= 2.
        groups: one group key per id (``None`` entries are their own group); ``None`` for no grouping.
        seed: seed of the tie order.

    Returns:
        ``k`` tuples of ids (natural order inside each fold).

    Raises:
        ValueError: ``k`` < 2, duplicate ids, ``groups`` of the wrong length.
        SplitError: fewer groups than folds (a fold would be empty).
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"the number of folds must be an int, got {k!r}")
    if k < 2:
        raise ValueError(
            f"cross-validation needs at least 2 folds, got {k} (1 fold leaves no image for training)"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("fold ids must be unique")
    if groups is not None and len(groups) != len(ids):
        raise ValueError(f"{len(groups)} groups for {len(ids)} ids")
    units = _units(ids, groups)
    if len(units) < k:
        raise SplitError(
            f"{k} folds need at least {k} groups, but the {len(ids)} images form {len(units)} group(s) "
            "(images of one patient/slide stay together); use fewer folds"
        )
    rng = np.random.default_rng(seed)
    shuffled = [units[int(i)] for i in rng.permutation(len(units))]
    shuffled.sort(key=lambda unit: -len(unit[1]))  # stable: seeded order among equal sizes
    folds: list[list[str]] = [[] for _ in range(k)]
    for _group, members in shuffled:
        target = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[target].extend(members)
    return [tuple(sorted(fold, key=natural_key)) for fold in folds]


def fold_split(
    ids: Sequence[str],
    k: int,
    fold: int,
    *,
    groups: Sequence[str | None] | None = None,
    seed: int = 0,
    val: float = 0.2,
    spec: str = "",
) -> SourceSplit:
    """The train/val/test split of one cross-validation fold: test = fold ``fold`` of :func:`make_folds`.

    Validation is drawn from the other folds (ratio ``val`` of them, whole groups, seeded), the rest trains.

    Raises:
        ValueError: ``fold`` outside [0, k), and as :func:`make_folds`.
        SplitError: as :func:`make_folds`, or too few groups left for train and val.
    """
    if not 0 <= fold < k:
        raise ValueError(f"data.fold must be in [0, {k - 1}] for {k} folds, got {fold}")
    folds = make_folds(ids, k, groups=groups, seed=seed)
    test = set(folds[fold])
    rest = [i for i in ids if i not in test]
    group_of = dict(zip(ids, groups)) if groups is not None else {}
    rest_units = _units(rest, [group_of.get(i) for i in rest] if groups is not None else None)
    if len(rest_units) < 2:
        raise SplitError(
            f"fold {fold} of {k} leaves {len(rest_units)} group(s) for train and val; use fewer folds"
        )
    n_val = math.ceil(round(val * len(rest), 9))
    sets = _assign(rest_units, [("val", n_val)], np.random.default_rng([seed, fold]))
    result = SourceSplit(
        sets={
            "train": tuple(sorted(sets["train"], key=natural_key)),
            "val": tuple(sorted(sets["val"], key=natural_key)),
            "test": tuple(folds[fold]),
        },
        spec=spec,
        scheme="custom",
        seed=seed,
        test=len(test) / max(len(ids), 1),
        val=val,
        grouped=groups is not None and any(g is not None for g in groups),
        meta={"folds": k, "fold": fold, "rule": "grouped k-fold, largest group first into the smallest fold"},
    )
    check_split(result, ids, groups=groups)
    return result


def split_dataset(
    dataset: SplittableDataset,
    *,
    scheme: str = "code",
    seed: int = 0,
    test: float | None = None,
    val: float | None = None,
    use_groups: bool = True,
    use_official: bool = True,
    spec: str = "",
) -> SourceSplit:
    """:func:`make_split` over a dataset's ids, groups and official split (e.g. a ``CachedDataset``)."""
    return make_split(
        dataset.ids,
        groups=dataset.groups if use_groups else None,
        official=dataset.official_split() if use_official else None,
        scheme=scheme,
        seed=seed,
        test=test,
        val=val,
        spec=spec,
    )


def _looks_like_path(entry: str) -> bool:
    return "/" in entry or "\\" in entry or entry.startswith("..") or Path(entry).is_absolute()


def check_split(
    split: SourceSplit,
    ids: Iterable[str],
    *,
    groups: Sequence[str | None] | None = None,
    root: str | Path | None = None,
    required: Sequence[str] = SET_NAMES,
    source: str = "base",
) -> None:
    """Check a split against a dataset before training.

    Args:
        split: the split to check.
        ids: the dataset's item ids (the same order as ``groups``).
        groups: the dataset's group keys, to check that no group spans two sets.
        root: the dataset root; an entry that is a path must stay inside it.
        required: the sets that must be non-empty.
        source: the source name, for messages.

    Raises:
        SplitError: naming the offending id, path or set.
    """
    id_list = list(ids)
    known = set(id_list)
    root_path = Path(root).resolve() if root is not None else None
    for name, entries in split.sets.items():
        if name not in SET_NAMES:
            raise SplitError(f"split source {source!r}: unknown set {name!r}; valid: {list(SET_NAMES)}")
        for entry in entries:
            if root_path is not None and _looks_like_path(entry):
                resolved = (root_path / entry).resolve()
                if not resolved.is_relative_to(root_path):
                    raise SplitError(
                        f"split source {source!r}, set {name!r}: {entry!r} is outside the dataset root "
                        f"{root_path}"
                    )
            if entry not in known:
                raise SplitError(
                    f"split source {source!r}, set {name!r}: unknown id {entry!r} "
                    f"(not in {split.spec or 'the dataset'})"
                )
    seen: dict[str, str] = {}
    for name, entries in split.sets.items():
        for entry in entries:
            if entry in seen and seen[entry] == name:
                raise SplitError(f"split source {source!r}: id {entry!r} appears twice in the {name!r} set")
            if entry in seen:
                raise SplitError(
                    f"split source {source!r}: id {entry!r} is in both {seen[entry]!r} and {name!r}"
                )
            seen[entry] = name
    for name in required:
        if not split[name]:
            raise SplitError(
                f"split source {source!r}: the {name!r} set is empty "
                f"({len(id_list)} items; use a larger dataset or other ratios)"
            )
    if groups is not None:
        where: dict[str, str] = {}
        for item, group in zip(id_list, groups):
            if group is None or item not in seen:
                continue
            if group in where and where[group] != seen[item]:
                raise SplitError(
                    f"split source {source!r}: group {group!r} is in both {where[group]!r} and {seen[item]!r}"
                )
            where[group] = seen[item]


def save_splits(path: str | Path, splits: Mapping[str, SourceSplit]) -> Path:
    """Write ``{source: split}`` to ``path`` as JSON, atomically (temp file + rename)."""
    path = Path(path)
    payload = {"schema": SPLIT_SCHEMA, "sources": {name: s.to_json() for name, s in splits.items()}}
    return atomic_write_text(path, json.dumps(payload, indent=1) + "\n")


def load_splits(path: str | Path) -> dict[str, SourceSplit]:
    """Read a split file written by :func:`save_splits`.

    Raises:
        SplitError: unreadable JSON, another schema version, or a malformed entry (naming the file).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitError(f"{path}: split file not found") from None
    except (OSError, json.JSONDecodeError) as err:
        raise SplitError(f"{path}: unreadable split file ({err})") from None
    if not isinstance(payload, dict) or payload.get("schema") != SPLIT_SCHEMA:
        found = payload.get("schema") if isinstance(payload, dict) else None
        raise SplitError(f"{path}: split schema {found!r} is not supported (expected {SPLIT_SCHEMA})")
    sources = payload.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise SplitError(f"{path}: no 'sources' in split file")
    out: dict[str, SourceSplit] = {}
    for name, entry in sources.items():
        sets = entry.get("sets") if isinstance(entry, dict) else None
        if not isinstance(sets, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in sets.values()
        ):
            raise SplitError(f"{path}: source {name!r} needs 'sets' mapping set names to lists of id strings")
        out[name] = SourceSplit(
            sets={k: tuple(v) for k, v in sets.items()},
            spec=str(entry.get("spec", "")),
            scheme=str(entry.get("scheme", "custom")),
            seed=int(entry.get("seed", 0)),
            test=float(entry.get("test", 0.0)),
            val=float(entry.get("val", 0.0)),
            grouped=bool(entry.get("grouped", False)),
            official=bool(entry.get("official", False)),
            meta=dict(entry.get("meta", {})),
        )
    return out
