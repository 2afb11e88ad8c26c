"""Decoding by the file's own metadata: every Pillow/tifffile mode the readers accept, palette masks by
index, lossy masks at half range, masks in alpha, EXIF orientation, format ranges, non-finite pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fixtures import save
from PIL import Image, ImageOps
from skimage.draw import disk

from fdseg.data.errors import DatasetError
from fdseg.data.formats._decode import orient
from fdseg.data.formats._io import read_image, read_mask
from fdseg.data.open import open_dataset

H, W = 4, 6
GREY = (np.arange(H * W, dtype=np.uint8).reshape(H, W) * 10).astype(np.uint8)  # 0..230
RGB = np.stack([GREY, 255 - GREY, (GREY.astype(np.int64) * 7) % 256], axis=2).astype(np.uint8)
FG = np.zeros((H, W), bool)
FG[1:3, 2:5] = True  # 6 px


def _u8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Independent reference: linear map of [low, high] to [0, 255], rounded."""
    return np.round((values.astype(np.float64) - low) / (high - low) * 255).astype(np.uint8)


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


# -- images: one case per mode -----------------------------------------------------------------------------

ImageCase = Callable[[Path], tuple[Path, np.ndarray, str]]


def _img_1(d: Path) -> tuple[Path, np.ndarray, str]:
    bits = GREY > 100
    return save(d / "a.png", bits.astype(np.uint8) * 255, mode="1"), _grey3(bits.astype(np.uint8) * 255), "1"


def _img_l(d: Path) -> tuple[Path, np.ndarray, str]:
    return save(d / "a.png", GREY), _grey3(GREY), "L"


def _img_la(d: Path) -> tuple[Path, np.ndarray, str]:
    la = np.stack([GREY, 255 - GREY], axis=2)
    return save(d / "a.png", la, mode="LA"), _grey3(GREY), "LA"


def _img_p(d: Path) -> tuple[Path, np.ndarray, str]:
    palette = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (10, 20, 30)], np.uint8)
    index = (np.arange(H * W).reshape(H, W) % 4).astype(np.uint8)
    img = Image.fromarray(index, mode="L").convert("P")
    img.putpalette(palette.ravel().tolist())
    img.save(d / "a.png")
    return d / "a.png", palette[index], "P"


def _img_p_transparent(d: Path) -> tuple[Path, np.ndarray, str]:
    palette = np.array([(9, 9, 9), (200, 100, 50)], np.uint8)
    index = FG.astype(np.uint8)
    img = Image.fromarray(index, mode="L").convert("P")
    img.putpalette(palette.ravel().tolist())
    img.save(d / "a.png", transparency=0)
    return d / "a.png", palette[index], "P"


def _img_rgb(d: Path) -> tuple[Path, np.ndarray, str]:
    return save(d / "a.png", RGB), RGB, "RGB"


def _img_rgba(d: Path) -> tuple[Path, np.ndarray, str]:
    rgba = np.concatenate([RGB, GREY[:, :, None]], axis=2)
    return save(d / "a.png", rgba), RGB, "RGBA"


def _img_bmp(d: Path) -> tuple[Path, np.ndarray, str]:
    return save(d / "a.bmp", RGB), RGB, "RGB"


def _img_cmyk(d: Path) -> tuple[Path, np.ndarray, str]:
    cmyk = np.stack([GREY // 2, GREY // 3, GREY // 4, GREY // 5], axis=2).astype(np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(d / "a.tif")
    ink = cmyk.astype(np.float64)
    expected = np.stack([(255 - ink[..., c]) * (255 - ink[..., 3]) / 255 for c in range(3)], axis=2)
    return d / "a.tif", np.round(expected).astype(np.uint8), "CMYK"


def _img_i16_png(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY.astype(np.uint16) * 257 + 3
    Image.fromarray(values).save(d / "a.png")
    return d / "a.png", _grey3(_u8(values, 0, 65535)), "I;16"


def _img_u16_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY.astype(np.uint16) * 100
    tifffile.imwrite(d / "a.tif", values)
    return d / "a.tif", _grey3(_u8(values, 0, 65535)), "TIFF minisblack uint16"


def _img_u16_tiff_lzw(d: Path) -> tuple[Path, np.ndarray, str]:
    # LZW needs imagecodecs in tifffile; Pillow's lossless decode is used with tifffile's metadata.
    values = GREY.astype(np.uint16) * 100 + 7
    Image.fromarray(values).save(d / "a.tif", compression="tiff_lzw")
    return d / "a.tif", _grey3(_u8(values, 0, 65535)), "TIFF minisblack uint16"


def _img_f32_tiff_lzw(d: Path) -> tuple[Path, np.ndarray, str]:
    values = (GREY / 230.0).astype(np.float32)
    Image.fromarray(values).save(d / "a.tif", compression="tiff_lzw")
    return d / "a.tif", _grey3(_u8(values, 0, 1)), "TIFF minisblack float32"


def _img_u12_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = (GREY.astype(np.uint16) * 17).clip(0, 4095)
    tifffile.imwrite(d / "a.tif", values, extratags=[(281, "H", 1, 4095, True)])
    return d / "a.tif", _grey3(_u8(values, 0, 4095)), "TIFF minisblack uint16"


def _img_i16_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = (GREY.astype(np.int16) * 200 - 20000).astype(np.int16)
    tifffile.imwrite(d / "a.tif", values)
    return d / "a.tif", _grey3(_u8(values, -32768, 32767)), "TIFF minisblack int16"


def _img_i32_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY.astype(np.int64) * 2**24 - 2**31
    tifffile.imwrite(d / "a.tif", values.astype(np.int32))
    return d / "a.tif", _grey3(_u8(values, -(2**31), 2**31 - 1)), "TIFF minisblack int32"


def _img_u32_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY.astype(np.uint64) * 2**24
    tifffile.imwrite(d / "a.tif", values.astype(np.uint32))
    return d / "a.tif", _grey3(_u8(values, 0, 2**32 - 1)), "TIFF minisblack uint32"


def _img_f32_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = (GREY / 230.0).astype(np.float32)
    tifffile.imwrite(d / "a.tif", values)
    return d / "a.tif", _grey3(_u8(values, 0, 1)), "TIFF minisblack float32"


def _img_f32_declared_range(d: Path) -> tuple[Path, np.ndarray, str]:
    values = (GREY / 115.0 - 1.0).astype(np.float32)  # -1..1, declared by SMin/SMaxSampleValue
    tags = [(340, "d", 1, -1.0, True), (341, "d", 1, 1.0, True)]
    tifffile.imwrite(d / "a.tif", values, extratags=tags)
    return d / "a.tif", _grey3(_u8(values, -1, 1)), "TIFF minisblack float32"


def _img_f64_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY / 255.0
    tifffile.imwrite(d / "a.tif", values)
    return d / "a.tif", _grey3(_u8(values, 0, 1)), "TIFF minisblack float64"


def _img_miniswhite8(d: Path) -> tuple[Path, np.ndarray, str]:
    tifffile.imwrite(d / "a.tif", GREY, photometric="miniswhite")
    return d / "a.tif", _grey3(255 - GREY), "L"


def _img_miniswhite16(d: Path) -> tuple[Path, np.ndarray, str]:
    values = GREY.astype(np.uint16) * 250
    tifffile.imwrite(d / "a.tif", values, photometric="miniswhite")
    return d / "a.tif", _grey3(255 - _u8(values, 0, 65535)), "TIFF miniswhite uint16"


def _img_rgb16_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    values = RGB.astype(np.uint16) * 255
    tifffile.imwrite(d / "a.tif", values, photometric="rgb")
    return d / "a.tif", _u8(values, 0, 65535), "TIFF rgb uint16"


def _img_rgb16_planar(d: Path) -> tuple[Path, np.ndarray, str]:
    values = RGB.astype(np.uint16) * 255
    tifffile.imwrite(d / "a.tif", np.moveaxis(values, 2, 0), photometric="rgb", planarconfig="separate")
    return d / "a.tif", _u8(values, 0, 65535), "TIFF rgb uint16"


def _img_grey16_alpha(d: Path) -> tuple[Path, np.ndarray, str]:
    values = np.stack([GREY.astype(np.uint16) * 256, np.full((H, W), 65535, np.uint16)], axis=2)
    tifffile.imwrite(d / "a.tif", values, photometric="minisblack", extrasamples=["unassalpha"])
    return d / "a.tif", _grey3(_u8(values[..., 0], 0, 65535)), "TIFF minisblack uint16"


def _img_palette_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    colours = (np.arange(3 * 256).reshape(3, 256) % 256).astype(np.uint16)
    tifffile.imwrite(d / "a.tif", GREY, photometric="palette", colormap=colours * 257)
    return d / "a.tif", colours.T.astype(np.uint8)[GREY], "P"


def _img_palette16_tiff(d: Path) -> tuple[Path, np.ndarray, str]:
    index = GREY.astype(np.uint16) * 3
    colours = (np.arange(3 * 65536).reshape(3, 65536) % 256).astype(np.uint16)
    tifffile.imwrite(d / "a.tif", index, photometric="palette", colormap=colours * 257)
    return d / "a.tif", colours.T.astype(np.uint8)[index], "TIFF palette uint16"


IMAGE_CASES: dict[str, ImageCase] = {
    "1": _img_1,
    "L": _img_l,
    "LA": _img_la,
    "P": _img_p,
    "P+tRNS": _img_p_transparent,
    "RGB": _img_rgb,
    "RGBA": _img_rgba,
    "BMP-RGB": _img_bmp,
    "CMYK-tiff": _img_cmyk,
    "I;16-png": _img_i16_png,
    "uint16-tiff": _img_u16_tiff,
    "uint16-tiff-lzw": _img_u16_tiff_lzw,
    "float32-tiff-lzw": _img_f32_tiff_lzw,
    "12bit-MaxSampleValue": _img_u12_tiff,
    "int16-tiff": _img_i16_tiff,
    "I-int32-tiff": _img_i32_tiff,
    "uint32-tiff": _img_u32_tiff,
    "F-float32-tiff": _img_f32_tiff,
    "float32-SMinSMax": _img_f32_declared_range,
    "float64-tiff": _img_f64_tiff,
    "miniswhite-8": _img_miniswhite8,
    "miniswhite-16": _img_miniswhite16,
    "rgb16-tiff": _img_rgb16_tiff,
    "rgb16-planar": _img_rgb16_planar,
    "grey16+alpha": _img_grey16_alpha,
    "palette-tiff": _img_palette_tiff,
    "palette16-tiff": _img_palette16_tiff,
}


@pytest.mark.parametrize("case", list(IMAGE_CASES), ids=list(IMAGE_CASES))
def test_every_image_mode_decodes_to_its_displayed_values(tmp_path: Path, case: str) -> None:
    path, expected, mode = IMAGE_CASES[case](tmp_path)
    out, info = read_image(path)
    assert info.mode == mode
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, expected)
    grey, _ = read_image(path, channels=1)
    luma = (expected.astype(np.uint32) @ np.array([299, 587, 114], np.uint32) + 500) // 1000
    np.testing.assert_array_equal(grey[..., 0], luma.astype(np.uint8))
    deep = mode == "I;16" or (mode.startswith("TIFF") and "palette" not in mode)
    assert info.rescaled == deep and (info.value_range is not None) == deep


def test_image_alpha_reported(tmp_path: Path) -> None:
    _, info = read_image(_img_rgba(tmp_path)[0])
    assert info.alpha_dropped and info.alpha_opaque is False
    _, info = read_image(_img_grey16_alpha(tmp_path)[0])
    assert info.alpha_dropped and info.alpha_opaque is True


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_pixels_are_an_error_naming_the_file(tmp_path: Path, bad: float) -> None:
    values = (GREY / 255.0).astype(np.float32)
    values[2, 3] = bad
    path = tmp_path / "nonfinite.tif"
    tifffile.imwrite(path, values)
    with pytest.raises(DatasetError, match="non-finite") as err:
        read_image(path)
    assert err.value.path == path and str(path) in str(err.value)
    with pytest.raises(DatasetError, match="non-finite") as err:
        read_mask(path)
    assert err.value.path == path


def test_samples_outside_the_declared_range_are_refused_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "float255.tif"
    tifffile.imwrite(path, GREY.astype(np.float32))  # 0..230 as float: no declared range, not 0..1
    with pytest.raises(DatasetError, match=r"samples span 0\.\.230, outside .* must lie in 0\.\.1") as err:
        read_image(path)
    assert err.value.path == path
    path = tmp_path / "over12bit.tif"
    tifffile.imwrite(path, np.full((H, W), 5000, np.uint16), extratags=[(281, "H", 1, 4095, True)])
    with pytest.raises(DatasetError, match=r"file declares 0\.\.4095"):
        read_image(path)


# -- masks: one case per mode ------------------------------------------------------------------------------

MaskCase = Callable[[Path], tuple[Path, str]]
L_FG = FG.astype(np.uint8) * 255


def _rgba(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.concatenate([colour, alpha[:, :, None]], axis=2).astype(np.uint8)


def _palette_mask(path: Path, colours: list[tuple[int, int, int]], transparency: int | None = None) -> Path:
    img = Image.fromarray(FG.astype(np.uint8), mode="L").convert("P")
    img.putpalette([v for c in colours for v in c])
    img.save(path, **({} if transparency is None else {"transparency": transparency}))
    return path


MASK_CASES: dict[str, MaskCase] = {
    "1": lambda d: (save(d / "m.png", L_FG, mode="1"), "value > 0"),
    "L": lambda d: (save(d / "m.png", L_FG), "value > 0"),
    "L-bmp": lambda d: (save(d / "m.bmp", L_FG), "value > 0"),
    "LA-opaque": lambda d: (
        save(d / "m.png", np.stack([L_FG, np.full((H, W), 255, np.uint8)], 2), mode="LA"),
        "value > 0",
    ),
    "LA-alpha-holds-mask": lambda d: (
        save(d / "m.png", np.stack([np.full((H, W), 255, np.uint8), L_FG], 2), mode="LA"),
        "alpha > 0 (colour uniform)",
    ),
    "P-black-white": lambda d: (
        _palette_mask(d / "m.png", [(0, 0, 0), (255, 255, 255)]),
        "palette index > 0",
    ),
    "P-dark-colour": lambda d: (_palette_mask(d / "m.png", [(0, 0, 0), (0, 0, 2)]), "palette index > 0"),
    "P-inverted-colours": lambda d: (
        _palette_mask(d / "m.png", [(255, 255, 255), (0, 0, 0)]),
        "palette index > 0",
    ),
    "P+tRNS": lambda d: (_palette_mask(d / "m.png", [(0, 0, 0), (9, 9, 9)], 0), "palette index > 0"),
    "RGB-grey": lambda d: (save(d / "m.png", np.repeat(L_FG[:, :, None], 3, 2)), "value > 0"),
    "RGB-dark-blue": lambda d: (
        save(d / "m.png", np.stack([0 * L_FG, 0 * L_FG, FG.astype(np.uint8) * 2], 2)),
        "any colour channel > 0",
    ),
    "RGBA-opaque": lambda d: (
        save(d / "m.png", _rgba(np.repeat(L_FG[:, :, None], 3, 2), np.full((H, W), 255))),
        "value > 0",
    ),
    "RGBA-alpha-holds-mask": lambda d: (
        save(d / "m.png", _rgba(np.full((H, W, 3), 255), L_FG)),
        "alpha > 0 (colour uniform)",
    ),
    "RGBA-consistent": lambda d: (
        save(d / "m.png", _rgba(np.repeat(L_FG[:, :, None], 3, 2), L_FG)),
        "value > 0",
    ),
    "I;16-png": lambda d: (save(d / "m.png", FG.astype(np.uint16) * 1000), "value > 0"),
    "I-int32-labels": lambda d: (_tif(d, FG.astype(np.int32) * 70000), "value > 0"),
    "uint16-labels": lambda d: (_tif(d, FG.astype(np.uint16) * 3), "value > 0"),
    "F-float32": lambda d: (_tif(d, FG.astype(np.float32)), "value > 0"),
    "miniswhite-8": lambda d: (
        _tif(d, L_FG, photometric="miniswhite"),
        "stored value > 0 (MinIsWhite: foreground shown dark)",
    ),
    "miniswhite-1bit": lambda d: (
        _tif(d, FG, photometric="miniswhite"),
        "stored value > 0 (MinIsWhite: foreground shown dark)",
    ),
    "1bit-oriented-tifffile": lambda d: (
        _tif(d, np.rot90(FG, 1), photometric="minisblack", extratags=[(274, "H", 1, 6, True)]),
        "value > 0",
    ),
    "miniswhite-16": lambda d: (
        _tif(d, FG.astype(np.uint16) * 9, photometric="miniswhite"),
        "stored value > 0 (MinIsWhite: foreground shown dark)",
    ),
    "palette-tiff": lambda d: (
        _tif(d, FG.astype(np.uint8), photometric="palette", colormap=np.full((3, 256), 65535, np.uint16)),
        "palette index > 0",
    ),
    "rgb16-tiff": lambda d: (
        _tif(d, np.stack([FG * 0, FG * 0, FG * 7], 2).astype(np.uint16), photometric="rgb"),
        "any colour channel > 0",
    ),
}


def _tif(d: Path, values: np.ndarray, **kwargs: object) -> Path:
    tifffile.imwrite(d / "m.tif", values, **kwargs)  # type: ignore[arg-type]
    return d / "m.tif"


@pytest.mark.parametrize("case", list(MASK_CASES), ids=list(MASK_CASES))
def test_every_mask_mode_gives_its_foreground(tmp_path: Path, case: str) -> None:
    path, rule = MASK_CASES[case](tmp_path)
    mask, info = read_mask(path)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, FG)
    assert info.rule == rule and info.nonbinary_pixels == 0 and not info.lossy


def test_palette_mask_by_index_576_px_whatever_the_colours(tmp_path: Path) -> None:
    index = np.zeros((64, 64), np.uint8)
    index[20:44, 30:54] = 1  # 576 px
    for name, palette in (("dark", [(0, 0, 0), (0, 0, 2)]), ("inverted", [(255, 255, 255), (0, 0, 0)])):
        img = Image.fromarray(index, mode="L").convert("P")
        img.putpalette([v for c in palette for v in c])
        img.save(tmp_path / f"{name}.png")
        # The luminance route gives 0 px (dark) and 3520 px (inverted): the colours say nothing here.
        grey = np.asarray(Image.open(tmp_path / f"{name}.png").convert("L"))
        assert int((grey > 0).sum()) == {"dark": 0, "inverted": 3520}[name]
        mask, info = read_mask(tmp_path / f"{name}.png")
        assert int(mask.sum()) == 576 and np.array_equal(mask, index == 1)
        assert info.rule == "palette index > 0" and info.mode == "P"


def _discs() -> np.ndarray:
    mask = np.zeros((48, 48), bool)
    for centre, radius in (((12, 12), 14), ((34, 16), 6), ((24, 36), 1)):
        rr, cc = disk(centre, radius, shape=mask.shape)
        mask[rr, cc] = True
    return mask


def test_jpeg_mask_thresholded_at_half_range_697_px(tmp_path: Path) -> None:
    drawn = _discs()
    assert int(drawn.sum()) == 697
    path = save(tmp_path / "discs.jpg", drawn.astype(np.uint8) * 255, quality=50)
    stored = np.asarray(Image.open(path))
    assert int((stored > 0).sum()) > 900  # ringing: "grey > 0" would call 928 px foreground
    mask, info = read_mask(path)
    assert int(mask.sum()) == 697 and np.array_equal(mask, drawn)
    assert info.lossy and info.nonbinary_pixels > 0 and info.rule.startswith("value > 127.5 (half range")


def test_fg_value_on_a_lossy_mask_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = save(tmp_path / "discs.jpg", _discs().astype(np.uint8) * 255, quality=50)
    with pytest.raises(DatasetError, match="fg_value=255 cannot pick one value of a lossily") as err:
        read_mask(path, fg_value=255)
    assert err.value.path == path


def test_colour_and_alpha_that_disagree_are_refused_naming_the_file(tmp_path: Path) -> None:
    colour = np.zeros((H, W, 3), np.uint8)
    colour[0, :] = 255  # colour says row 0; alpha says the block
    path = save(tmp_path / "ambiguous.png", _rgba(colour, L_FG))
    with pytest.raises(DatasetError, match="colour and alpha channels disagree on 12 pixels") as err:
        read_mask(path)
    assert err.value.path == path


# -- orientation -------------------------------------------------------------------------------------------


def _oriented_png(path: Path, array: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(path, array, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(tmp_path: Path, orientation: int) -> None:
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _oriented_png(tmp_path / "o.png", stored, orientation)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    out, info = read_image(path)
    assert info.orientation == orientation and (info.height, info.width) == reference.shape[:2]
    np.testing.assert_array_equal(out, reference)
    np.testing.assert_array_equal(orient(stored, orientation), reference)
    mask_file = _oriented_png(tmp_path / "m.png", (stored[..., 0] > 128).astype(np.uint8) * 255, orientation)
    mask, mask_info = read_mask(mask_file)
    assert mask_info.orientation == orientation
    np.testing.assert_array_equal(mask, reference[..., 0] > 128)


@pytest.mark.parametrize("shape", [(64, 64), (40, 64)], ids=["square", "non-square"])
def test_jpeg_exif_orientation_6_agrees_with_a_mask_drawn_on_the_displayed_image(
    tmp_path: Path, shape: tuple[int, int]
) -> None:
    h, w = shape
    displayed_mask = np.zeros((w, h), bool)  # displayed = stored rotated 90° clockwise: (W, H)
    displayed_mask[5:20, 8:30] = True
    # The camera stored the picture unrotated: the displayed picture rotated back counter-clockwise.
    displayed = np.where(displayed_mask, 230, 20).astype(np.uint8)
    stored = np.rot90(displayed, 1)
    assert stored.shape == (h, w)
    exif = Image.Exif()
    exif[0x0112] = 6
    root = tmp_path / "ds"
    save(root / "images" / "x.jpg", np.repeat(stored[:, :, None], 3, 2), exif=exif, quality=95)
    save(root / "masks" / "x.png", displayed_mask.astype(np.uint8) * 255)
    sample = open_dataset(f"folder:{root}")[0]  # no size error for the non-square case
    image, mask = sample["image"], sample["mask"]
    assert image.shape[:2] == mask.shape == (w, h)
    agree = float(np.mean((image[..., 0] > 128) == mask))
    assert agree == 1.0
    assert sample["meta"]["image_orientation"] == "6"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit-pillow", "16-bit-tifffile"])
def test_tiff_orientation_applied_once_and_reported(tmp_path: Path, dtype: type) -> None:
    from fdseg.data.formats._io import image_size

    stored = np.random.default_rng(1).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    scale = 257 if dtype is np.uint16 else 1
    path = tmp_path / "o.tif"
    turned = [(274, "H", 1, 6, True)]
    tifffile.imwrite(path, stored.astype(dtype) * scale, photometric="rgb", extratags=turned)
    out, info = read_image(path)
    np.testing.assert_array_equal(out, np.rot90(stored, -1))  # 90° clockwise, exactly once
    assert info.orientation == 6 and (info.height, info.width) == (6, 4)
    assert image_size(path)[:2] == (6, 4)
    mask_path = tmp_path / "m.tif"
    tifffile.imwrite(mask_path, (stored[..., 0] > 128).astype(dtype), extratags=turned)
    mask, mask_info = read_mask(mask_path)
    np.testing.assert_array_equal(mask, np.rot90(stored[..., 0] > 128, -1))
    assert mask_info.orientation == 6
