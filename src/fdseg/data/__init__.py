"""fdseg.data: dataset formats, the preprocessing cache, splits, transforms, pooling, noise and tensors.

Typical use::

    from fdseg.data import CachedDataset, SegmentationDataset, collate, open_dataset, split_dataset

    raw = open_dataset("synthetic:runs/data/base?family=nuclei&site=base&n=40&seed=0&size=64")
    arrays = CachedDataset(raw, size=64, cache_dir="runs/cache")
    split = split_dataset(arrays, scheme="code", seed=35)
    train = SegmentationDataset.from_ids(arrays, split.train, transforms=build_transforms("paper"))
"""

from fdseg.data.base import (
    FORMATS,
    LOADER_VERSION,
    RawDataset,
    RawSample,
    Record,
    natural_key,
    parse_spec,
)
from fdseg.data.cache import CachedDataset, default_cache_dir, resize_image, resize_mask
from fdseg.data.errors import DatasetError, DatasetNotFoundError, SplitError
from fdseg.data.formats._io import read_image, read_mask
from fdseg.data.noise import PAPER_SIGMAS, GaussianNoise, add_gaussian_noise
from fdseg.data.open import open_dataset
from fdseg.data.pooling import PooledDataset, addition_schedule, select_subset
from fdseg.data.splits import SourceSplit, check_split, load_splits, make_split, save_splits, split_dataset
from fdseg.data.synthetic import (
    SiteConfig,
    ensure_synthetic,
    generate,
    site_names,
    site_preset,
    write_synthetic,
)
from fdseg.data.torch_dataset import ArrayDataset, Batch, Sample, SegmentationDataset, collate
from fdseg.data.transforms import (
    PAPER_VIEWS,
    Compose,
    RandomFlip,
    RandomRot90,
    RandomView,
    apply_view,
    build_transforms,
)

__all__ = [
    "FORMATS",
    "LOADER_VERSION",
    "PAPER_SIGMAS",
    "PAPER_VIEWS",
    "ArrayDataset",
    "Batch",
    "CachedDataset",
    "Compose",
    "DatasetError",
    "DatasetNotFoundError",
    "GaussianNoise",
    "PooledDataset",
    "RandomFlip",
    "RandomRot90",
    "RandomView",
    "RawDataset",
    "RawSample",
    "Record",
    "Sample",
    "SegmentationDataset",
    "SiteConfig",
    "SourceSplit",
    "SplitError",
    "add_gaussian_noise",
    "addition_schedule",
    "apply_view",
    "build_transforms",
    "check_split",
    "collate",
    "default_cache_dir",
    "ensure_synthetic",
    "generate",
    "load_splits",
    "make_split",
    "natural_key",
    "open_dataset",
    "parse_spec",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "save_splits",
    "select_subset",
    "site_names",
    "site_preset",
    "split_dataset",
    "write_synthetic",
]
