"""Safe file reading shared by the format loaders: images, masks, XML, option parsing, lenient scans.

Every reader turns a bad file into a :class:`~fdseg.data.errors.DatasetError` that names the file:
a missing or truncated file, an undecodable one, an image beyond the pixel limit (decompression bombs),
hostile XML (entity expansion, external entities, any DTD). Images and masks are decoded by what the file
says its values mean (mode, palette, TIFF photometric interpretation, sample format and bit depth, alpha,
lossy compression, EXIF orientation); the rules live in :mod:`fdseg.data.formats._decode` and are
re-exported here (:func:`read_image`, :func:`read_mask`, :func:`image_size`).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from fdseg.data.base import IMAGE_EXTENSIONS, RawDataset, Record
from fdseg.data.errors import DatasetError
from fdseg.data.formats._decode import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    MaskInfo,
    decode_checked,
    image_meta,
    image_size,
    mask_meta,
    open_checked,
    read_image,
    read_mask,
)

logger = logging.getLogger(__name__)

#: Options every loader in :mod:`fdseg.data.formats` accepts (strings, as in a spec's query).
COMMON_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"strict": "true", "max_pixels": str(DEFAULT_MAX_PIXELS)}
)

Severity = Literal["error", "warning", "info"]

#: Operating-system litter a loader skips like dotfiles (compared case-insensitively).
OS_LITTER = ("thumbs.db", "ehthumbs.db", "desktop.ini")

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_MAX_PIXELS",
    "FormatLoader",
    "ImageInfo",
    "MaskInfo",
    "Problem",
    "SizeMismatchError",
    "check_same_size",
    "find_folder",
    "image_meta",
    "image_size",
    "is_hidden",
    "looks_like_mask",
    "mask_meta",
    "parse_bool",
    "parse_choice",
    "parse_int",
    "read_image",
    "read_mask",
    "read_xml",
    "scan_xml",
]


@dataclass(frozen=True)
class Problem:
    """Something wrong (or worth knowing) about one file of a dataset.

    Attributes:
        path: the file or folder concerned.
        message: what is wrong, in words.
        severity: ``"error"`` (the file cannot be used), ``"warning"`` (usable, probably not intended) or
            ``"info"`` (a known quirk that the loader handles).
    """

    path: Path
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.path}: {self.message}"


# -- options ----------------------------------------------------------------------------------------------


def parse_bool(name: str, value: str | bool) -> bool:
    """Parse a spec option such as ``strict=false``.

    Raises:
        ValueError: ``value`` is not one of true/false/1/0/yes/no.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"option {name}={value!r} must be true or false")


def parse_int(name: str, value: str | int, *, minimum: int = 1) -> int:
    """Parse an integer spec option (``max_pixels=1000000``) that must be ``>= minimum``.

    Raises:
        ValueError: not an integer, or below ``minimum``.
    """
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"option {name}={value!r} must be an integer") from None
    if number < minimum:
        raise ValueError(f"option {name}={value!r} must be >= {minimum}")
    return number


def parse_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise ``ValueError`` listing them."""
    from fdseg._checks import check_option

    return check_option(f"option {name}", str(value), list(choices))


# -- images and masks ------------------------------------------------------------------------------------


def check_same_size(image: np.ndarray, image_path: Path, mask: np.ndarray, mask_path: Path) -> None:
    """Raise :class:`SizeMismatchError` unless ``mask`` has the image's (H, W)."""
    if image.shape[:2] != mask.shape[:2]:
        raise SizeMismatchError(
            mask_path,
            f"mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image {image_path.name} is "
            f"{image.shape[0]}x{image.shape[1]}",
        )


class SizeMismatchError(DatasetError):
    """A mask whose size differs from its image's."""


# -- XML --------------------------------------------------------------------------------------------------


def read_xml(path: str | Path) -> Any:
    """Parse an XML file safely with ``defusedxml`` and return its root element.

    DTDs, entity declarations (billion laughs) and external entities are refused.

    Raises:
        DatasetError: missing file, malformed XML, or hostile XML (the message names the file).
    """
    import defusedxml
    import defusedxml.ElementTree as SafeET

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        tree = SafeET.parse(path, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise DatasetError(
            path,
            f"refused unsafe XML (DTDs, entity declarations and external entities are not allowed): {exc!r}",
        ) from None
    except SafeET.ParseError as exc:
        raise DatasetError(path, f"malformed XML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read XML: {exc}") from None
    return tree.getroot()


def _refuse(kind: str) -> Any:
    def handler(*args: Any) -> Any:
        import defusedxml

        exc = {
            "dtd": defusedxml.DTDForbidden,
            "entity": defusedxml.EntitiesForbidden,
            "external": defusedxml.ExternalReferenceForbidden,
        }[kind]
        raise exc(*(["?"] * {"dtd": 3, "entity": 6, "external": 4}[kind]))

    return handler


def scan_xml(path: str | Path, on_start: Any) -> None:
    """Stream an XML file through ``on_start(tag, attributes)`` with the refusals of :func:`read_xml`.

    The expat parser gets the handlers ``defusedxml`` installs (any DTD, entity declaration or external
    entity reference raises ``defusedxml.DTDForbidden`` / ``EntitiesForbidden`` /
    ``ExternalReferenceForbidden``), but no element tree is built, which makes large annotation files
    (MoNuSeg: 4 MB, 60k elements) several times faster to read than with ``defusedxml.ElementTree``.

    Raises:
        DatasetError: missing file, malformed or hostile XML (naming the file), or whatever ``on_start``
            raises as ``DatasetError``.
    """
    import pyexpat

    import defusedxml

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    parser = pyexpat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse("dtd")
    parser.EntityDeclHandler = _refuse("entity")
    parser.UnparsedEntityDeclHandler = _refuse("entity")
    parser.ExternalEntityRefHandler = _refuse("external")
    parser.StartElementHandler = on_start
    try:
        with path.open("rb") as f:
            parser.ParseFile(f)
    except defusedxml.DefusedXmlException as exc:
        raise DatasetError(
            path, f"refused unsafe XML (DTDs, entity declarations, external entities are forbidden): {exc!r}"
        ) from None
    except pyexpat.ExpatError as exc:
        raise DatasetError(path, f"malformed XML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read XML: {exc}") from None


# -- lenient scanning -------------------------------------------------------------------------------------


def is_hidden(path: Path) -> bool:
    """Files a loader always skips: dotfiles (``.DS_Store``, AppleDouble ``._x.png``), ``__MACOSX`` and
    operating-system litter (``Thumbs.db``, ``desktop.ini``; see :data:`OS_LITTER`)."""
    return (
        path.name.startswith(".")
        or path.name.lower() in OS_LITTER
        or path.name == "__MACOSX"
        or "__MACOSX" in path.parts
    )


class FormatLoader(RawDataset, abc.ABC):
    """Base of the distributed-format loaders: common options and lenient scanning.

    Options (besides each format's own): ``strict`` (default ``true``: the first broken pairing raises
    ``DatasetError``; ``false``: broken records are skipped and listed in :attr:`problems`, which is what
    :func:`fdseg.data.check.check_dataset` uses) and ``max_pixels`` (images beyond it are refused).
    Subclasses implement :meth:`scan_records` and :meth:`load_record`.
    """

    option_defaults: Mapping[str, str] = COMMON_OPTIONS

    def scan(self) -> list[Record]:
        """Parse the common options, then list records with :meth:`scan_records`."""
        self.strict = parse_bool("strict", self.options["strict"])
        self.max_pixels = parse_int("max_pixels", self.options["max_pixels"])
        self.problems: list[Problem] = []
        return self.scan_records()

    @abc.abstractmethod
    def scan_records(self) -> list[Record]:
        """List the records (use :meth:`problem` for anything wrong with one file)."""

    def problem(self, path: Path, message: str, severity: Severity = "error") -> None:
        """Report a problem with ``path``: raise it when strict (errors only), otherwise record it."""
        if severity == "error" and self.strict:
            raise DatasetError(path, message)
        self.problems.append(Problem(path, message, severity))
        log = logger.warning if severity != "info" else logger.info
        log("%s: %s", path, message)

    def files_by_stem(self, folder: Path, suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, Path]:
        """Files of ``folder`` with one of ``suffixes`` by stem (hidden files skipped); a second file with the
        same stem is reported and ignored."""
        found: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if not path.is_file() or is_hidden(path) or path.suffix.lower() not in suffixes:
                continue
            if path.stem in found:
                self.problem(path, f"second file with the id {path.stem!r} (first: {found[path.stem].name})")
                continue
            found[path.stem] = path
        return found

    @staticmethod
    def image_meta(info: ImageInfo) -> dict[str, str]:
        """The decode facts loaders put in ``RawSample["meta"]`` (see :func:`._decode.image_meta`)."""
        return image_meta(info)

    @staticmethod
    def mask_meta(infos: list[MaskInfo]) -> dict[str, str]:
        """The mask facts loaders put in ``RawSample["meta"]`` (see :func:`._decode.mask_meta`)."""
        return mask_meta(infos)


def looks_like_mask(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether an image file holds a (near-)binary single-channel picture rather than a photograph.

    True for mode ``1``, and for files whose channels are equal everywhere with at least 95 % of the pixels
    at 0 or at the maximum. Used where folder names cannot be trusted (the Kaggle TNBC copy).
    """
    img = open_checked(path, max_pixels)
    with img:
        decode_checked(path, img)
        if img.mode == "1":
            return True
        rgb = np.asarray(img.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        return False
    grey = rgb[..., 0]
    peak = grey.max()
    return bool(np.count_nonzero((grey == 0) | (grey == peak)) >= 0.95 * grey.size)


def find_folder(root: Path, accept: Any, depth: int = 2) -> Path | None:
    """The first folder at ``root`` or up to ``depth`` levels below it (breadth first, sorted, hidden
    folders skipped) for which ``accept(folder)`` is true; ``None`` when there is none."""
    frontier = [root] if root.is_dir() else []
    for _ in range(depth + 1):
        for folder in frontier:
            if accept(folder):
                return folder
        frontier = [d for f in frontier for d in sorted(f.iterdir()) if d.is_dir() and not is_hidden(d)]
    return None
