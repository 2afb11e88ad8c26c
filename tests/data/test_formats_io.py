"""Safe readers: pixel conversions, mask binarisation, and every bad file named in the error."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixtures import save
from PIL import Image

from fdseg.data.errors import DatasetError
from fdseg.data.formats._io import looks_like_mask, read_image, read_mask, read_xml, scan_xml


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` but holds a tiny IDAT (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )
    return path


def test_modes_convert_to_rgb_uint8(tmp_path: Path) -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 255, np.uint8)], axis=2)
    out, info = read_image(save(tmp_path / "a.png", rgba))
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and np.array_equal(out, rgb)
    assert info.alpha_dropped and info.alpha_opaque
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out, info = read_image(save(tmp_path / "l.png", grey))
    assert info.mode == "L" and np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    out, _ = read_image(tmp_path / "l.png", channels=1)
    assert out.shape == (4, 5, 1) and np.array_equal(out[..., 0], grey)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    out, info = read_image(tmp_path / "p.png")
    assert info.mode == "P" and np.array_equal(out, np.asarray(pal.convert("RGB")))
    translucent = rgba.copy()
    translucent[0, 0, 3] = 10
    _, info = read_image(save(tmp_path / "t.png", translucent))
    assert info.alpha_opaque is False


def test_sixteen_bit_values_scaled_by_their_format_range(tmp_path: Path) -> None:
    # The same samples give the same pixels whatever else the image holds: 0..65535 -> 0..255.
    small = np.array([[0, 100], [200, 235]], dtype=np.uint16)
    Image.fromarray(small).save(tmp_path / "s.tif")
    out, info = read_image(tmp_path / "s.tif")
    assert info.rescaled and info.value_range == (0.0, 65535.0)
    assert np.array_equal(out[..., 0], np.round(small / 65535 * 255).astype(np.uint8))
    big = np.array([[0, 1000], [2000, 65535]], dtype=np.uint16)
    Image.fromarray(big).save(tmp_path / "b.png")
    out, info = read_image(tmp_path / "b.png")
    assert info.mode == "I;16" and out[..., 0].tolist() == [[0, 4], [8, 255]]


def test_tiff_pillow_cannot_open_falls_back_to_tifffile(tmp_path: Path) -> None:
    import tifffile

    rgb16 = (np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    out, info = read_image(tmp_path / "rgb16.tif")
    assert info.mode == "TIFF rgb uint16" and out.shape == (2, 3, 3)
    assert np.array_equal(out, np.round(rgb16 * (255 / 65535)).astype(np.uint8))


def test_masks_binarised_and_soft_values_counted(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    for mode in ("1", "L"):
        out, info = read_mask(save(tmp_path / f"m{mode}.png", mask.astype(np.uint8) * 255, mode=mode))
        assert out.dtype == bool and np.array_equal(out, mask) and info.nonbinary_pixels == 0
    # RGBA with R=G=B holding the mask and an opaque alpha: the alpha must not turn everything foreground.
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = (mask.astype(np.uint8) * 255)[..., None]
    rgba[..., 3] = 255
    out, info = read_mask(save(tmp_path / "rgba.png", rgba))
    assert np.array_equal(out, mask) and info.mode == "RGBA"
    soft = mask.astype(np.uint8) * 255
    soft[0, :3] = [30, 128, 200]
    out, info = read_mask(save(tmp_path / "soft.png", soft))
    assert info.nonbinary_pixels == 3 and out.sum() == mask.sum() + 3
    out, info = read_mask(save(tmp_path / "zero.png", np.zeros((6, 6, 3), np.uint8)))
    assert not out.any() and info.foreground_value == 0
    labels = np.zeros((4, 4), np.uint16)
    labels[0, 0], labels[3, 3] = 1, 300
    Image.fromarray(labels).save(tmp_path / "inst.tif")
    out, _ = read_mask(tmp_path / "inst.tif")
    assert out.sum() == 2 and out[0, 0] and out[3, 3]


def test_looks_like_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    assert looks_like_mask(save(tmp_path / "m.png", (rng.random((8, 8)) > 0.5).astype(np.uint8) * 255))
    assert not looks_like_mask(save(tmp_path / "i.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)))


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_truncated_corrupt_missing_files_name_the_file(tmp_path: Path, reader: object) -> None:
    good = save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image at all")
    for path, words in (
        (truncated, "truncated"),
        (corrupt, "cannot read"),
        (tmp_path / "gone.png", "not found"),
    ):
        with pytest.raises(DatasetError, match=words) as err:
            reader(path)  # type: ignore[operator]
        assert err.value.path == path and str(path) in str(err.value)


def test_pixel_limit_is_configurable_and_checked_before_decoding(tmp_path: Path) -> None:
    path = save(tmp_path / "big.png", np.zeros((40, 50), np.uint8))
    assert read_image(path, max_pixels=2000)[0].shape == (40, 50, 3)
    with pytest.raises(DatasetError, match="beyond the pixel limit of 1999") as err:
        read_image(path, max_pixels=1999)
    assert err.value.path == path
    with pytest.raises(DatasetError, match="pixel limit"):
        read_mask(path, max_pixels=100)
    # A header claiming 30000 x 30000 pixels: refused from the header, with Pillow's own limit or ours.
    bomb = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DatasetError, match="pixel limit") as err:
        read_image(bomb)
    assert err.value.path == bomb
    with pytest.raises(DatasetError, match="pixel limit"):
        read_image(_png_header_only(tmp_path / "bomb2.png", 9000, 9000))


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Annotations><Region Id="&lol3;"/></Annotations>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY ext SYSTEM "file:///etc/passwd">]><Annotations>&ext;</Annotations>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_hostile_xml_refused_by_both_parsers(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hostile.xml"
    path.write_text(text)
    with pytest.raises(DatasetError, match="refused unsafe XML") as err:
        read_xml(path)
    assert err.value.path == path
    seen: list[str] = []
    with pytest.raises(DatasetError, match="refused unsafe XML"):
        scan_xml(path, lambda tag, attrs: seen.append(tag))
    assert "Region" not in seen


def test_malformed_xml(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<Annotations><Region Id='1'></Annotations>")
    with pytest.raises(DatasetError, match="malformed XML") as err:
        read_xml(path)
    assert err.value.path == path
    with pytest.raises(DatasetError, match="malformed XML"):
        scan_xml(path, lambda tag, attrs: None)
