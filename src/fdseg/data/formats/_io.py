"""Safe file reading shared by the format loaders: images, masks, XML, option parsing, lenient scans.

Every reader turns a bad file into a :class:`~fdseg.data.errors.DatasetError` that names the file:
a missing or truncated file, an undecodable one, an image beyond the pixel limit (decompression bombs),
hostile XML (entity expansion, external entities, any DTD). Decoding rules:

* images -> ``(H, W, 3)`` uint8 RGB (or ``(H, W, 1)`` with ``channels=1``): alpha is dropped (``RGBA``,
  ``LA``, ``PA``), palettes are expanded, ``L``/``1`` are replicated, 16-bit and float data keep their values
  when the maximum is at most 255 and are otherwise scaled linearly so that the image maximum maps to 255;
* masks -> ``(H, W)`` bool, foreground = value > 0 after ``convert("L")`` for 8-bit colour modes (so an
  RGBA mask with an opaque alpha channel is read by its grey value, not by its alpha), the raw value for
  ``1``, 16/32-bit and float modes. Values other than 0 and the mask maximum are counted, never hidden.

TIFF files are read with Pillow (LZW, PackBits, 8/16-bit greyscale); files Pillow cannot open (e.g. 16-bit
RGB) fall back to ``tifffile``.
"""

from __future__ import annotations

import abc
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from PIL import Image

from fdseg.data.base import RawDataset, Record
from fdseg.data.errors import DatasetError

logger = logging.getLogger(__name__)

#: Default largest image (in pixels) a loader decodes; larger files raise ``DatasetError`` before decoding.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

#: Options every loader in :mod:`fdseg.data.formats` accepts (strings, as in a spec's query).
COMMON_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"strict": "true", "max_pixels": str(DEFAULT_MAX_PIXELS)}
)

Severity = Literal["error", "warning", "info"]

_TIFF_SUFFIXES = (".tif", ".tiff")
#: Image extensions the format loaders pair (lower case, with the dot).
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError)


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


@dataclass(frozen=True)
class ImageInfo:
    """How an image file was decoded.

    Attributes:
        mode: the Pillow mode of the file (``"RGBA"``, ``"L"``, ``"I;16"``, …; ``"tifffile"`` dtypes as
            ``"tifffile:<dtype>"``).
        height: rows.
        width: columns.
        alpha_dropped: the file had an alpha channel that was removed.
        alpha_opaque: whether that alpha channel was 255 everywhere (``None`` without alpha).
        rescaled: 16-bit or float values above 255 were scaled to uint8.
    """

    mode: str
    height: int
    width: int
    alpha_dropped: bool = False
    alpha_opaque: bool | None = None
    rescaled: bool = False


@dataclass(frozen=True)
class MaskInfo:
    """How a mask file was binarised.

    Attributes:
        mode: the Pillow mode of the file.
        nonbinary_pixels: pixels whose value is neither 0 nor the mask's maximum (0 for a clean mask).
        foreground_value: the largest value found (255 for ``L`` masks, 1 for ``1``; 0 for an empty mask).
    """

    mode: str
    nonbinary_pixels: int
    foreground_value: int


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


# -- images -----------------------------------------------------------------------------------------------


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily with Pillow and refuse it before decoding when it is beyond ``max_pixels``."""
    if not path.is_file():
        raise DatasetError(path, "file not found" if not path.exists() else "not a regular file")
    with warnings.catch_warnings():
        # Our own limit below is authoritative; Pillow's warning between its two limits is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise DatasetError(
                path, f"image is beyond the pixel limit (decompression bomb?): {exc}"
            ) from None
        except _DECODE_ERRORS as exc:
            raise DatasetError(path, f"cannot read image: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise DatasetError(
            path,
            f"image of {width}x{height} = {width * height} pixels is beyond the pixel limit of {max_pixels} "
            "(raise max_pixels if the file is genuine)",
        )
    return img


def _decode(path: Path, img: Image.Image) -> Image.Image:
    """Force a full decode so that truncated or corrupt files fail here, naming the file."""
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise DatasetError(path, f"cannot decode image (truncated or corrupt?): {exc}") from None
    return img


def _numeric_to_uint8(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """Map a 16/32-bit or float array to uint8: unchanged when it fits in [0, 255], else scaled by its max."""
    arr = np.nan_to_num(arr.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if peak <= 255.0:
        return np.round(arr).astype(np.uint8), False
    return np.round(arr * (255.0 / peak)).astype(np.uint8), True


def _read_tiff_fallback(path: Path, max_pixels: int, reason: str) -> np.ndarray:
    """Read a TIFF that Pillow cannot open with ``tifffile`` (first page)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = tuple(int(s) for s in page.shape)
            if len(shape) < 2:
                raise DatasetError(path, f"TIFF page has shape {shape}, expected (H, W[, C])")
            if shape[0] * shape[1] > max_pixels:
                raise DatasetError(
                    path,
                    f"image of {shape[1]}x{shape[0]} pixels is beyond the pixel limit of {max_pixels}",
                )
            arr = np.asarray(page.asarray())
    except DatasetError:
        raise
    except Exception as exc:  # tifffile raises many types (ValueError, KeyError, TiffFileError, ...)
        raise DatasetError(path, f"cannot read TIFF with Pillow ({reason}) nor tifffile ({exc})") from None
    return arr


def _open_or_read_tiff(path: Path, max_pixels: int) -> Image.Image | np.ndarray:
    """A lazily opened Pillow image, or the first-page array of a TIFF that only tifffile can read."""
    try:
        return _open_checked(path, max_pixels)
    except DatasetError as exc:
        if path.suffix.lower() not in _TIFF_SUFFIXES or "cannot read image" not in exc.problem:
            raise
        return _read_tiff_fallback(path, max_pixels, exc.problem)


def _array_to_rgb(path: Path, arr: np.ndarray, mode: str) -> tuple[np.ndarray, ImageInfo]:
    """Turn a tifffile array (H, W), (H, W, C) into (H, W, 3) uint8."""
    rescaled = False
    if arr.dtype != np.uint8:
        arr, rescaled = _numeric_to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    else:
        raise DatasetError(path, f"unsupported TIFF array shape {arr.shape}; expected (H, W) or (H, W, 3|4)")
    h, w = arr.shape[:2]
    return np.ascontiguousarray(arr), ImageInfo(mode=mode, height=h, width=w, rescaled=rescaled)


def read_image(
    path: str | Path, *, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file to uint8.

    Args:
        path: a PNG, JPEG, BMP or TIFF file.
        channels: 3 for RGB output, 1 for a single grey channel (``convert("L")`` of colour images).
        max_pixels: refuse files with more pixels than this (checked from the header, before decoding).

    Returns:
        ``(image, info)``: image ``(H, W, channels)`` uint8 in [0, 255]; ``info`` says how it was decoded.

    Raises:
        DatasetError: missing, truncated, corrupt or oversized file (the message names the file).
        ValueError: ``channels`` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    img = _open_or_read_tiff(path, max_pixels)
    if isinstance(img, np.ndarray):
        arr, info = _array_to_rgb(path, img, "tifffile")
        return (arr if channels == 3 else _rgb_to_grey(arr)), info
    if _is_deep_colour_tiff(img):
        # Pillow keeps only the high byte of 16-bit colour TIFFs; read full precision and apply our rule.
        img.close()
        arr, info = _array_to_rgb(path, _read_tiff_fallback(path, max_pixels, "16-bit colour"), "tifffile")
        return (arr if channels == 3 else _rgb_to_grey(arr)), info
    with img:
        _decode(path, img)
        mode = img.mode
        alpha_dropped = "A" in mode or (mode == "P" and "transparency" in img.info)
        alpha_opaque: bool | None = None
        if mode in ("RGBA", "LA", "La", "RGBa"):
            alpha = np.asarray(img.getchannel("A"))
            alpha_opaque = bool(alpha.min() == 255) if alpha.size else True
        rescaled = False
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            grey, rescaled = _numeric_to_uint8(np.asarray(img))
            arr = grey[:, :, None] if channels == 1 else np.repeat(grey[:, :, None], 3, axis=2)
        elif channels == 1:
            arr = np.asarray(img.convert("L"))[:, :, None]
        else:
            arr = np.asarray(img.convert("RGB"))
        info = ImageInfo(
            mode=mode,
            height=img.height,
            width=img.width,
            alpha_dropped=alpha_dropped,
            alpha_opaque=alpha_opaque,
            rescaled=rescaled,
        )
    return np.ascontiguousarray(arr), info


def _is_deep_colour_tiff(img: Image.Image) -> bool:
    """A TIFF with more than 8 bits per colour sample (which Pillow would truncate to its high byte)."""
    if img.format != "TIFF" or img.mode not in ("RGB", "RGBA"):
        return False
    bits = getattr(img, "tag_v2", {}).get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return any(int(b) > 8 for b in bits)


def _rgb_to_grey(arr: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (H, W, 3) uint8 array, as Pillow's ``convert("L")`` computes it, (H, W, 1)."""
    weights = np.array([299, 587, 114], dtype=np.uint32)
    grey = (arr.astype(np.uint32) @ weights + 500) // 1000
    return grey.astype(np.uint8)[:, :, None]


def image_size(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, str]:
    """``(height, width, mode)`` of an image from its header only (no decode)."""
    path = Path(path)
    img = _open_or_read_tiff(path, max_pixels)
    if isinstance(img, np.ndarray):
        return int(img.shape[0]), int(img.shape[1]), "tifffile"
    with img:
        return img.height, img.width, img.mode


# -- masks ------------------------------------------------------------------------------------------------


def _binarise(values: np.ndarray, mode: str) -> tuple[np.ndarray, MaskInfo]:
    peak = int(values.max()) if values.size else 0
    if peak == 0:
        return np.zeros(values.shape, dtype=bool), MaskInfo(mode=mode, nonbinary_pixels=0, foreground_value=0)
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        nonbinary = int(counts[1:peak].sum())
    else:
        nonbinary = int(np.count_nonzero((values != 0) & (values != peak)))
    return values > 0, MaskInfo(mode=mode, nonbinary_pixels=nonbinary, foreground_value=peak)


def read_mask(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, fg_value: int | None = None
) -> tuple[np.ndarray, MaskInfo]:
    """Decode a mask file to a boolean foreground map.

    Foreground is value > 0 of ``convert("L")`` for 8-bit colour and palette modes (``RGB``, ``RGBA``,
    ``P``, ``LA``), of the raw values for ``1``, ``L``, 16/32-bit and float modes.

    Args:
        path: a PNG/TIFF/BMP mask.
        max_pixels: refuse files with more pixels than this.
        fg_value: when given, only pixels of exactly this value are foreground (after the grey conversion
            above); ``None`` means any value > 0.

    Returns:
        ``(mask, info)``: mask ``(H, W)`` bool; ``info.nonbinary_pixels`` counts soft values.

    Raises:
        DatasetError: missing, truncated, corrupt or oversized file.
    """
    path = Path(path)
    img = _open_or_read_tiff(path, max_pixels)
    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        return _binarise(np.asarray(arr), "tifffile")
    with img:
        _decode(path, img)
        mode = img.mode
        if mode == "1":
            values = np.asarray(img).astype(np.uint8)
        elif mode in ("L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            values = np.asarray(img)
        else:
            values = np.asarray(img.convert("L"))
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=0.0)
    mask, info = _binarise(values, mode)
    if fg_value is not None:
        mask = np.asarray(values == fg_value)
    return mask, info


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
    """Files a loader always skips: dotfiles (``.DS_Store``, AppleDouble ``._x.png``) and ``__MACOSX``."""
    return path.name.startswith(".") or path.name == "__MACOSX" or "__MACOSX" in path.parts


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

    def files_by_stem(self, folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
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

    def image_meta(self, info: ImageInfo) -> dict[str, str]:
        """The decode facts loaders put in ``RawSample["meta"]`` (read by the dataset checker)."""
        meta = {"image_mode": info.mode}
        if info.alpha_dropped:
            meta["alpha_dropped"] = "opaque" if info.alpha_opaque else "translucent"
        if info.rescaled:
            meta["rescaled"] = "true"
        return meta

    @staticmethod
    def mask_meta(infos: list[MaskInfo]) -> dict[str, str]:
        """The mask facts loaders put in ``RawSample["meta"]``: file modes and soft (non-binary) pixels."""
        return {
            "mask_mode": "+".join(sorted({i.mode for i in infos})),
            "mask_nonbinary_px": str(sum(i.nonbinary_pixels for i in infos)),
        }


def looks_like_mask(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether an image file holds a (near-)binary single-channel picture rather than a photograph.

    True for mode ``1``, and for files whose channels are equal everywhere with at least 95 % of the pixels
    at 0 or at the maximum. Used where folder names cannot be trusted (the Kaggle TNBC copy).
    """
    img = _open_checked(path, max_pixels)
    with img:
        _decode(path, img)
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
