"""Pixel decoding by the file's own metadata: what a file says its sample values mean.

Every image and mask file is read into its *stored* samples plus what the file says about them — the
Pillow mode or the TIFF photometric interpretation, sample format and bit depth, a palette, an alpha
channel, a lossy compression, the EXIF/TIFF orientation — and only then turned into display pixels
(:func:`read_image`) or a foreground map (:func:`read_mask`). Each decision is returned in
:class:`ImageInfo` / :class:`MaskInfo`, which the loaders copy into ``RawSample["meta"]`` (see
:func:`image_meta` and :func:`mask_meta`) so that ``fdseg data check`` can show it.

Images (``(H, W, 3)`` uint8 RGB, or ``(H, W, 1)``):

* the picture **as displayed**: EXIF/TIFF ``Orientation`` 2–8 is applied (a phone JPEG with orientation 6
  comes out rotated 90° clockwise, as every viewer shows it);
* ``1``/``L`` are replicated, palettes (``P``, ``PA``, TIFF palette) are expanded, ``CMYK``/``YCbCr`` are
  converted, alpha (``LA``, ``PA``, ``RGBA``, TIFF extra samples) is dropped and reported;
* samples that are not 8-bit are scaled from the range **the format declares** to 0..255: unsigned
  integers from ``0..2**bits - 1`` (or the TIFF ``MaxSampleValue``), signed integers from their full
  two's-complement range, floats from the TIFF ``SMinSampleValue..SMaxSampleValue`` or else ``0..1``.
  Samples outside that range, and non-finite samples (NaN, ±inf), are a :class:`DatasetError` naming the
  file — never clipped, rounded or rescaled per image;
* TIFF ``MinIsWhite`` is inverted for display.

Masks (``(H, W)`` bool) — foreground is decided by what the samples are:

* grey (``1``, ``L``, 16/32-bit, float): stored value > 0; for TIFF ``MinIsWhite`` the *stored* value
  (what the annotation tool wrote, shown dark), not the inverted display;
* palette (``P``, ``PA``, TIFF palette): palette **index** > 0, whatever the colours of the palette;
* colour (``RGB``, ``CMYK``, …): grey value when R = G = B, otherwise any channel > 0;
* alpha: ignored when uniform; when the colour is uniform and only the alpha varies, the mask is the alpha
  > 0; when both vary and disagree the file is refused (it is ambiguous);
* lossy files (JPEG, JPEG-compressed TIFF): thresholded at half the value range (> 127.5 for 8-bit), so
  compression ringing is not foreground; their soft pixels are counted and reported.

Values other than 0 and the mask's maximum are counted (``nonbinary_pixels``), never hidden.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fdseg.data.errors import DatasetError

#: Default largest image (in pixels) a loader decodes; larger files raise ``DatasetError`` before decoding.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

_TIFF_SUFFIXES = (".tif", ".tiff")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError)
_ORIENTATION_TAG = 0x0112
_LOSSY_FORMATS = ("JPEG", "MPO")
_TIFF_JPEG_COMPRESSION = (6, 7)
_PILLOW_GREY = ("1", "L")
_PILLOW_COLOUR = ("RGB", "RGBX", "CMYK", "YCbCr")
_PILLOW_ALPHA = ("LA", "La", "RGBA", "RGBa", "PA")
_PILLOW_16 = ("I;16", "I;16L", "I;16B", "I;16N")
#: Pillow modes read directly; TIFFs in other modes (``I``, ``F``, 16-bit colour) are read with tifffile.
PILLOW_MODES = (*_PILLOW_GREY, "P", *_PILLOW_ALPHA, *_PILLOW_COLOUR, *_PILLOW_16)
#: TIFF photometric interpretations read with tifffile (name -> code).
TIFF_PHOTOMETRICS = {"miniswhite": 0, "minisblack": 1, "rgb": 2, "palette": 3}
_ORIENTATION_NAMES = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


@dataclass(frozen=True)
class ImageInfo:
    """How an image file was decoded.

    Attributes:
        mode: the Pillow mode of the file (``"RGBA"``, ``"L"``, ``"I;16"``, …) or, for TIFFs read with
            tifffile, ``"TIFF <photometric> <dtype>"`` (``"TIFF minisblack float32"``).
        height: rows of the decoded (displayed) image.
        width: columns of the decoded (displayed) image.
        alpha_dropped: the file had an alpha channel that was removed.
        alpha_opaque: whether that alpha channel was opaque everywhere (``None`` without alpha).
        value_range: ``(low, high)`` of the samples as the format declares it, mapped linearly to 0..255;
            ``None`` for 8-bit samples (used as they are).
        orientation: the EXIF/TIFF orientation applied (1 = none; 6 = rotated 90° clockwise, …).
        notes: other decisions in words (``"MinIsWhite inverted for display"``, ``"palette expanded"``).
    """

    mode: str
    height: int
    width: int
    alpha_dropped: bool = False
    alpha_opaque: bool | None = None
    value_range: tuple[float, float] | None = None
    orientation: int = 1
    notes: tuple[str, ...] = ()

    @property
    def rescaled(self) -> bool:
        """Whether the samples were scaled from a range other than 0..255."""
        return self.value_range is not None


@dataclass(frozen=True)
class MaskInfo:
    """How a mask file was binarised.

    Attributes:
        mode: the Pillow mode of the file, or ``"TIFF <photometric> <dtype>"``.
        nonbinary_pixels: pixels whose value is neither 0 nor the mask's maximum (0 for a clean mask).
        foreground_value: the largest decision value found (255 for ``L`` masks, 1 for ``1``, the largest
            palette index for ``P``; 0 for an empty mask).
        rule: how foreground was decided, in words (``"value > 0"``, ``"palette index > 0"``,
            ``"value > 127.5 (half range; lossy JPEG)"``, ``"alpha > 0 (colour uniform)"``, …).
        lossy: the file is lossily compressed (JPEG).
        orientation: the EXIF/TIFF orientation applied (1 = none).
    """

    mode: str
    nonbinary_pixels: int
    foreground_value: float
    rule: str = "value > 0"
    lossy: bool = False
    orientation: int = 1


@dataclass
class _Samples:
    """The stored samples of a file and what the file says about them (internal)."""

    mode: str
    kind: str  # "grey", "palette" or "colour"
    values: np.ndarray  # (H, W) grey or palette index, (H, W, 3) colour: stored samples
    value_range: tuple[float, float]
    alpha: np.ndarray | None = None
    alpha_max: float = 255.0
    palette_rgb: np.ndarray | None = None  # display of a palette file, (H, W, 3|4) uint8 or (N, 3) float
    inverted: bool = False  # MinIsWhite: displayed = high - value
    lossy: bool = False
    orientation: int = 1
    notes: list[str] = field(default_factory=list)


# -- opening --------------------------------------------------------------------------------------------


def open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open ``path`` lazily with Pillow and refuse it before decoding when it is beyond ``max_pixels``.

    Raises:
        DatasetError: missing file, unreadable header, or more pixels than ``max_pixels``.
    """
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


def decode_checked(path: Path, img: Image.Image) -> Image.Image:
    """Force a full decode so that truncated or corrupt files fail here, naming the file."""
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise DatasetError(path, f"cannot decode image (truncated or corrupt?): {exc}") from None
    return img


def _pillow_orientation(img: Image.Image) -> int:
    """The EXIF orientation (TIFF: tag 274) an opened image still carries; 1 when none."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        if img.format == "TIFF":
            value = getattr(img, "tag_v2", {}).get(_ORIENTATION_TAG, value)
    except _DECODE_ERRORS:
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF/TIFF orientation (1–8) to an ``(H, W[, C])`` array so that it reads as displayed.

    The same transforms as Pillow's ``ImageOps.exif_transpose``: 2 mirror left-right, 3 rotate 180°,
    4 mirror top-bottom, 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise.
    """
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _tiff_needs_tifffile(img: Image.Image) -> bool:
    """A TIFF Pillow would decode with lost precision or without its range (``I``, ``F``, deep colour)."""
    if img.format != "TIFF":
        return False
    if img.mode not in (*_PILLOW_GREY, "P", *_PILLOW_ALPHA, *_PILLOW_COLOUR):
        return True
    bits = getattr(img, "tag_v2", {}).get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return any(int(b) > 8 for b in bits)


def _read_samples(path: Path, max_pixels: int, *, for_mask: bool) -> _Samples:
    """Open ``path`` and return its stored samples with the file's own description of them."""
    try:
        img = open_checked(path, max_pixels)
    except DatasetError as exc:
        if path.suffix.lower() not in _TIFF_SUFFIXES or "cannot read image" not in exc.problem:
            raise
        return _read_tifffile(path, max_pixels, f"Pillow: {exc.problem}")
    if img.format == "TIFF" and _pillow_orientation(img) != 1:
        # Pillow's own turning of TIFFs is unreliable (it can fill the turned size with unturned rows).
        img.close()
        return _read_tifffile(path, max_pixels, "a TIFF with an Orientation tag is read with tifffile")
    if _tiff_needs_tifffile(img):
        with img:
            decoded = _pillow_numeric(img)
        return _read_tifffile(path, max_pixels, f"Pillow mode {img.mode}", decoded)
    with img:
        decode_checked(path, img)
        return _pillow_samples(path, img, for_mask=for_mask)


def _pillow_samples(path: Path, img: Image.Image, *, for_mask: bool) -> _Samples:
    mode = img.mode
    orientation = _pillow_orientation(img)
    tags = getattr(img, "tag_v2", {}) if img.format == "TIFF" else {}
    lossy = img.format in _LOSSY_FORMATS or tags.get(259) in _TIFF_JPEG_COMPRESSION
    # Pillow shows MinIsWhite TIFFs as displayed (it inverts them); keep the stored samples.
    inverted = img.format == "TIFF" and tags.get(262) == 0 and mode in _PILLOW_GREY
    common: dict[str, Any] = {"lossy": lossy, "orientation": orientation}
    if mode in _PILLOW_GREY:
        values = np.asarray(img.convert("L")) if mode == "1" else np.asarray(img)
        if mode == "1":
            values = (values > 0).astype(np.uint8)
        top = 1.0 if mode == "1" else 255.0
        if inverted:
            values = (np.uint8(top) - values).astype(np.uint8)
        return _Samples(mode, "grey", values, (0.0, top), inverted=inverted, **common)
    if mode in _PILLOW_16:
        return _Samples(mode, "grey", np.asarray(img).astype(np.uint16), (0.0, 65535.0), **common)
    if mode in ("P", "PA"):
        indices = np.asarray(img)
        indices = indices[..., 0] if indices.ndim == 3 else indices
        transparency = mode == "PA" or "transparency" in img.info
        display = np.asarray(img.convert("RGBA" if transparency else "RGB"))
        alpha = display[..., 3] if transparency else None
        top = float(max(int(indices.max()) if indices.size else 0, 1))
        return _Samples(
            mode,
            "palette",
            indices,
            (0.0, top),
            alpha=alpha,
            palette_rgb=display[..., :3],
            **common,
        )
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return _Samples(mode, "grey", la[..., 0], (0.0, 255.0), alpha=la[..., 1], **common)
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"))
        return _Samples(mode, "colour", rgba[..., :3], (0.0, 255.0), alpha=rgba[..., 3], **common)
    if mode in _PILLOW_COLOUR:
        notes = [] if mode in ("RGB", "RGBX") else [f"{mode} converted to RGB"]
        return _Samples(mode, "colour", np.asarray(img.convert("RGB")), (0.0, 255.0), notes=notes, **common)
    what = "mask" if for_mask else "image"
    raise DatasetError(
        path,
        f"{what} mode {mode!r} ({img.format}) is not supported; save it as one of {list(PILLOW_MODES)} "
        "(or a grey/RGB/palette TIFF)",
    )


def _tiff_range(path: Path, page: Any, dtype: np.dtype) -> tuple[float, float]:
    """The value range a TIFF page declares: MaxSampleValue / SMin..SMaxSampleValue, else its sample type."""
    tags = page.tags

    def tag(code: int) -> float | None:
        entry = tags.get(code)
        if entry is None:
            return None
        value = entry.value
        value = value[0] if isinstance(value, tuple | list) else value
        return float(value)

    if dtype.kind == "b":  # bilevel (1-bit) samples
        return 0.0, 1.0
    smin, smax = tag(340), tag(341)
    if smin is not None and smax is not None and smax > smin:
        return smin, smax
    if dtype.kind == "u":
        bits = int(page.bitspersample)
        declared = tag(281)
        top = float(2**bits - 1)
        return 0.0, declared if declared is not None and 0 < declared <= top else top
    if dtype.kind == "i":
        bits = int(page.bitspersample)
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if dtype.kind == "f":
        return 0.0, 1.0
    raise DatasetError(path, f"TIFF sample type {dtype} is not supported (unsigned, signed or float)")


def _pillow_numeric(img: Image.Image) -> np.ndarray | None:
    """Pillow's exact decode of a single-channel 16/32-bit or float TIFF (``None`` when it has none).

    Used when tifffile lacks the codec (LZW, JPEG, … need ``imagecodecs``) but Pillow decodes the samples
    losslessly; tifffile still supplies the metadata.
    """
    if img.mode not in (*_PILLOW_16, "I", "F"):
        return None
    try:
        img.load()
    except _DECODE_ERRORS:
        return None
    return np.asarray(img)


def _read_tifffile(path: Path, max_pixels: int, reason: str, decoded: np.ndarray | None = None) -> _Samples:
    """Read the first page of a TIFF with tifffile, with its photometric, sample format and bit depth.

    ``decoded``: Pillow's lossless decode of the same page, used when tifffile cannot decompress it.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = tuple(int(s) for s in page.shape)
            spp = int(page.samplesperpixel)
            planar_separate = spp > 1 and int(page.planarconfig) == 2
            h, w = (shape[1], shape[2]) if planar_separate else (shape[0], shape[1])
            if len(shape) < 2:
                raise DatasetError(path, f"TIFF page has shape {shape}, expected (H, W[, C])")
            if h * w > max_pixels:
                raise DatasetError(path, f"image of {w}x{h} pixels is beyond the pixel limit of {max_pixels}")
            try:
                arr = np.asarray(page.asarray())
            except Exception:
                exact = decoded is not None and decoded.shape == shape
                if not exact or page.dtype not in (np.uint16, np.int16, np.int32, np.float32):
                    raise
                arr = np.asarray(decoded).astype(page.dtype)  # exact implies decoded is not None
            photometric = int(page.photometric)
            colormap = None if page.colormap is None else np.asarray(page.colormap)
            extras = [int(e) for e in (page.extrasamples or ())]
            compression = int(page.compression)
            orientation_tag = page.tags.get(274)
            orientation = int(orientation_tag.value) if orientation_tag is not None else 1
            value_range = _tiff_range(path, page, arr.dtype)
    except DatasetError:
        raise
    except Exception as exc:  # tifffile raises many types (ValueError, KeyError, TiffFileError, ...)
        raise DatasetError(path, f"cannot read TIFF with Pillow ({reason}) nor tifffile ({exc})") from None
    if planar_separate and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    names = {v: k for k, v in TIFF_PHOTOMETRICS.items()}
    if photometric not in names:
        raise DatasetError(
            path,
            f"TIFF photometric interpretation {photometric} is not supported "
            f"(supported: {', '.join(f'{k} ({v})' for k, v in TIFF_PHOTOMETRICS.items())})",
        )
    name = names[photometric]
    mode = f"TIFF {name} {arr.dtype}"
    orientation = orientation if 1 <= orientation <= 8 else 1
    common: dict[str, Any] = {
        "lossy": compression in _TIFF_JPEG_COMPRESSION,
        "orientation": orientation,
    }
    colour = photometric == 2
    n_colour = 3 if colour else 1
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] < n_colour:
        raise DatasetError(path, f"TIFF array of shape {arr.shape} does not fit photometric {name}")
    values = arr[..., :n_colour] if colour else arr[..., 0]
    alpha = None
    # Extra samples: 1 associated alpha, 2 unassociated alpha; 0 (unspecified) is data, not alpha.
    if arr.shape[2] > n_colour and extras and extras[0] in (1, 2):
        alpha = arr[..., n_colour]
    alpha_max = value_range[1]
    if photometric == 3:
        if colormap is None or colormap.ndim != 2 or colormap.shape[0] != 3:
            raise DatasetError(path, "palette TIFF without a 3-row ColorMap")
        indices = values.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= colormap.shape[1]):
            raise DatasetError(path, f"palette indices exceed the ColorMap's {colormap.shape[1]} entries")
        rgb = colormap.T.astype(np.float64)[indices]
        display = np.round(rgb * (255.0 / 65535.0)).astype(np.uint8)
        top = float(max(int(indices.max()) if indices.size else 0, 1))
        return _Samples(mode, "palette", values, (0.0, top), alpha=alpha, palette_rgb=display, **common)
    return _Samples(
        mode,
        "colour" if colour else "grey",
        values,
        value_range,
        alpha=alpha,
        alpha_max=alpha_max,
        inverted=photometric == 0,
        **common,
    )


# -- images ---------------------------------------------------------------------------------------------


def _to_uint8(path: Path, values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Scale samples from the declared ``value_range`` to uint8 (0..255); refuse what lies outside it."""
    low, high = value_range
    if values.dtype == np.uint8 and (low, high) == (0.0, 255.0):
        return values
    data = values.astype(np.float64)
    if not np.all(np.isfinite(data)):
        n = int(np.count_nonzero(~np.isfinite(data)))
        raise DatasetError(path, f"image holds {n} non-finite samples (NaN or ±inf); cannot display it")
    if data.size and (data.min() < low or data.max() > high):
        where = (
            "a float image without SMinSampleValue/SMaxSampleValue tags must lie in 0..1"
            if values.dtype.kind == "f" and (low, high) == (0.0, 1.0)
            else f"the file declares {low:g}..{high:g}"
        )
        raise DatasetError(
            path, f"samples span {data.min():g}..{data.max():g}, outside their range ({where})"
        )
    return np.round((data - low) * (255.0 / (high - low))).astype(np.uint8)


def rgb_to_grey(arr: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (H, W, 3) uint8 array, as Pillow's ``convert("L")`` computes it, (H, W, 1)."""
    weights = np.array([299, 587, 114], dtype=np.uint32)
    grey = (arr.astype(np.uint32) @ weights + 500) // 1000
    return grey.astype(np.uint8)[:, :, None]


def read_image(
    path: str | Path, *, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file to uint8, as displayed (see the module docstring for the rules).

    Args:
        path: a PNG, JPEG, BMP or TIFF file.
        channels: 3 for RGB output, 1 for a single grey channel (ITU-R 601 luma of colour images).
        max_pixels: refuse files with more pixels than this (checked from the header, before decoding).

    Returns:
        ``(image, info)``: image ``(H, W, channels)`` uint8 in [0, 255] with the EXIF/TIFF orientation
        applied; ``info`` says how it was decoded.

    Raises:
        DatasetError: missing, truncated, corrupt or oversized file; an unsupported mode or photometric
            interpretation; non-finite samples or samples outside the declared range (naming the file).
        ValueError: ``channels`` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    s = _read_samples(path, max_pixels, for_mask=False)
    notes = list(s.notes)
    if s.kind == "palette":
        if s.palette_rgb is None:
            raise DatasetError(path, "palette image without a palette")
        rgb = s.palette_rgb
        notes.append("palette expanded")
        value_range = None
    else:
        scaled = _to_uint8(path, s.values, s.value_range)
        if s.inverted:
            scaled = np.uint8(255) - scaled
            notes.append("MinIsWhite inverted for display")
        rgb = scaled if s.kind == "colour" else scaled[:, :, None]
        value_range = None if s.value_range == (0.0, 255.0) or s.mode == "1" else s.value_range
    alpha_opaque: bool | None = None
    if s.alpha is not None:
        alpha_opaque = bool(s.alpha.min() >= s.alpha_max) if s.alpha.size else True
    if rgb.shape[2] == 1:
        arr = rgb if channels == 1 else np.repeat(rgb, 3, axis=2)
    else:
        arr = rgb if channels == 3 else rgb_to_grey(rgb)
    arr = orient(arr, s.orientation)
    info = ImageInfo(
        mode=s.mode,
        height=int(arr.shape[0]),
        width=int(arr.shape[1]),
        alpha_dropped=s.alpha is not None,
        alpha_opaque=alpha_opaque,
        value_range=value_range,
        orientation=s.orientation,
        notes=tuple(notes),
    )
    return np.ascontiguousarray(arr), info


def image_size(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, str]:
    """``(height, width, mode)`` of an image as displayed (orientation applied), from its header only."""
    path = Path(path)
    try:
        img = open_checked(path, max_pixels)
    except DatasetError as exc:
        if path.suffix.lower() not in _TIFF_SUFFIXES or "cannot read image" not in exc.problem:
            raise
        s = _read_tifffile(path, max_pixels, exc.problem)
        h, w = s.values.shape[:2]
        return (w, h, s.mode) if s.orientation >= 5 else (h, w, s.mode)
    with img:
        # Pillow already gives a TIFF's displayed size (it turns TIFFs upright when loading).
        orientation = 1 if img.format == "TIFF" else _pillow_orientation(img)
        h, w = img.height, img.width
        return (w, h, img.mode) if orientation >= 5 else (h, w, img.mode)


# -- masks ----------------------------------------------------------------------------------------------


def _soft_count(values: np.ndarray, peak: float) -> int:
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        return int(counts[1 : int(peak)].sum())
    return int(np.count_nonzero((values != 0) & (values != peak)))


def read_mask(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, fg_value: int | None = None
) -> tuple[np.ndarray, MaskInfo]:
    """Decode a mask file to a boolean foreground map, by what the file says its values mean.

    Foreground (see the module docstring): stored value > 0 for grey files (``1``, ``L``, 16/32-bit,
    float; the stored value for TIFF MinIsWhite), palette index > 0 for palette files, grey value or any
    channel > 0 for colour files, the alpha channel when it alone varies, and value > half the range for
    lossy (JPEG) files. The EXIF/TIFF orientation is applied, as for :func:`read_image`.

    Args:
        path: a PNG/TIFF/BMP/JPEG mask.
        max_pixels: refuse files with more pixels than this.
        fg_value: when given, only pixels whose decision value (grey value, palette index, …) equals it
            are foreground; ``None`` means the rule above.

    Returns:
        ``(mask, info)``: mask ``(H, W)`` bool; ``info.rule`` says how foreground was decided and
        ``info.nonbinary_pixels`` counts soft values.

    Raises:
        DatasetError: missing, truncated, corrupt or oversized file; an unsupported mode; non-finite values;
            colour and alpha channels that disagree; ``fg_value`` with a lossy file (naming the file).
    """
    path = Path(path)
    s = _read_samples(path, max_pixels, for_mask=True)
    values = s.values
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        n = int(np.count_nonzero(~np.isfinite(values)))
        raise DatasetError(path, f"mask holds {n} non-finite values (NaN or ±inf)")
    if s.kind == "palette":
        rule = "palette index > 0"
    elif s.kind == "colour":
        if np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2]):
            values, rule = values[..., 0], "value > 0"
        else:
            values, rule = values.max(axis=2), "any colour channel > 0"
    elif s.inverted:
        rule = "stored value > 0 (MinIsWhite: foreground shown dark)"
    else:
        rule = "value > 0"
    low, high = s.value_range
    threshold = (low + high) / 2.0 if s.lossy and s.kind != "palette" else 0.0
    if s.lossy and s.kind != "palette":
        rule = f"value > {threshold:g} (half range; lossy compression)"
    if s.alpha is not None and s.alpha.size and s.alpha.min() != s.alpha.max():
        if values.size and values.min() == values.max():
            values, rule, threshold = s.alpha, "alpha > 0 (colour uniform)", 0.0
        else:
            disagree = int(np.count_nonzero((values > threshold) != (s.alpha > 0)))
            if disagree:
                raise DatasetError(
                    path,
                    f"{s.mode} mask: its colour and alpha channels disagree on {disagree} pixels, so it is "
                    "unclear which one holds the mask; save the mask as a single-channel image",
                )
    if fg_value is not None and s.lossy:
        raise DatasetError(
            path,
            f"fg_value={fg_value} cannot pick one value of a lossily compressed ({s.mode}) mask, whose "
            "values the compression changed; save the masks losslessly (PNG) or leave fg_value unset",
        )
    peak = float(values.max()) if values.size else 0.0
    mask = values > threshold if fg_value is None else values == fg_value
    if fg_value is not None:
        rule = f"value == {fg_value}"
    nonbinary = _soft_count(values, peak) if peak > 0 else 0
    info = MaskInfo(
        mode=s.mode,
        nonbinary_pixels=nonbinary,
        foreground_value=int(peak) if float(peak).is_integer() else peak,
        rule=rule,
        lossy=s.lossy,
        orientation=s.orientation,
    )
    return orient(np.asarray(mask, dtype=bool), s.orientation), info


# -- metadata for the checker ---------------------------------------------------------------------------


def image_meta(info: ImageInfo) -> dict[str, str]:
    """The decode facts loaders put in ``RawSample["meta"]`` (read by :mod:`fdseg.data.check`)."""
    meta = {"image_mode": info.mode}
    if info.alpha_dropped:
        meta["alpha_dropped"] = "opaque" if info.alpha_opaque else "translucent"
    if info.value_range is not None:
        meta["rescaled"] = "true"
        meta["image_range"] = f"{info.value_range[0]:g}..{info.value_range[1]:g}"
    if info.orientation != 1:
        meta["image_orientation"] = str(info.orientation)
    if info.notes:
        meta["image_decode"] = "; ".join(info.notes)
    return meta


def mask_meta(infos: list[MaskInfo]) -> dict[str, str]:
    """The mask facts loaders put in ``RawSample["meta"]``: modes, rules, soft pixels, lossy, orientation."""
    if not infos:
        return {}
    meta = {
        "mask_mode": "+".join(sorted({i.mode for i in infos})),
        "mask_rule": "; ".join(sorted({i.rule for i in infos})),
        "mask_nonbinary_px": str(sum(i.nonbinary_pixels for i in infos)),
    }
    if any(i.lossy for i in infos):
        meta["mask_lossy"] = "true"
    turned = sorted({i.orientation for i in infos} - {1})
    if turned:
        meta["mask_orientation"] = ",".join(str(o) for o in turned)
    return meta


def orientation_name(orientation: int) -> str:
    """``6`` -> ``"rotated 90° clockwise"`` (the EXIF orientation in words)."""
    return _ORIENTATION_NAMES.get(orientation, "as stored")
