"""Synthetic multi-site segmentation data: histology-like nuclei and ultrasound-like lesions.

Every image is a deterministic function of ``(family, site, seed, index, size)``. A *site*
(:class:`SiteConfig`) controls three independent kinds of shift between data sources:

- **appearance**: stain vectors and concentrations, illumination, contrast, brightness, gamma, noise, blur
  (and speckle, attenuation, lesion echo for ultrasound);
- **geometry**: object size, density, shape irregularity;
- **annotation style**: the given mask is the true mask (``true``), dilated or eroded by a disk of
  ``annotation_amount`` px, or smoothed (Gaussian of σ = ``annotation_amount``, then > 0.5).

Random draws are split into a geometry stream and a texture stream seeded by ``(seed, index)`` only, so two
sites that share appearance and geometry (``base`` and ``dil2``) produce **identical images** for the same
seed and differ only in their masks; two sites that share geometry (``base`` and ``appear``) produce the same
objects rendered differently. To draw a novel site's images independently of the base site's, give it a
different seed.

The multi-class family ``nuclei_mc`` draws nuclei of three types (:data:`NUCLEUS_TYPES`: small dark round
lymphocytes, large pale irregular epithelial nuclei, elongated spindle nuclei) on the same H&E background,
with the nuclei presets as sites, and also returns the class map (:func:`generate_class_map`).

The nuclei family follows the calibrated toy of ``synthetic-calibration.md`` §1 (64×64, rendered on an 88×88
canvas and centre-cropped; Beer–Lambert H&E; pale nuclei as hard positives; unannotated faint "cytoplasm"
blobs and fibre streaks as hard negatives). Its presets (``base``, ``appear``, ``appear_mild``, ``geom``,
``dil1``, ``dil2``, ``ero1``, ``ero2``, ``smooth2``, ``appear_dil2``, ``appear_mild_dil2``) are the sites of
that note's calibration table, where an annotation shift on a look-alike site produced the data-addition
dilemma (−4 to −14 Dice points) and an appearance shift a small one (−0.8). The ultrasound family has the
same preset names with ultrasound-specific values.

:func:`write_synthetic` writes a plain ``images/`` + ``masks/`` folder (PNG, masks 0/255) and a
``synthetic.json``, so that generated data goes through the same loading path (``folder:``) as real data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy import ndimage

from fdseg._checks import check_option
from fdseg.data.errors import DatasetError

#: Bump when the generator's output changes for the same parameters.
GENERATOR_VERSION = 1

Family = Literal["nuclei", "ultrasound", "nuclei_mc"]
FAMILIES: tuple[str, ...] = ("nuclei", "ultrasound", "nuclei_mc")

#: Nucleus types of the multi-class family ``nuclei_mc``: name, radius factor (x ``r_mean``), eccentricity,
#: boundary wobble, haematoxylin density, share of the nuclei. They differ in size, shape and stain.
NUCLEUS_TYPES: tuple[tuple[str, float, float, float, float, float], ...] = (
    ("lymphocyte", 0.65, 0.10, 0.05, 1.35, 0.40),  # small, round, dark
    ("epithelial", 1.35, 0.30, 0.15, 0.70, 0.35),  # large, irregular, pale
    ("spindle", 1.00, 0.75, 0.08, 1.00, 0.25),  # elongated
)
#: Class names of ``nuclei_mc`` (index = label; 0 = background).
MULTICLASS_NAMES: tuple[str, ...] = ("background", *(t[0] for t in NUCLEUS_TYPES))
ANNOTATION_STYLES: tuple[str, ...] = ("true", "dilate", "erode", "smooth")

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class SiteConfig:
    """The generation parameters of one synthetic site (data source).

    Fields marked (nuclei) or (ultrasound) are used by that family only. Defaults are the nuclei ``base``
    site.

    Attributes:
        h_vec: (nuclei) haematoxylin optical-density vector (R, G, B).
        e_vec: (nuclei) eosin optical-density vector (R, G, B).
        h_conc: (nuclei) haematoxylin concentration multiplier.
        e_conc: (nuclei) eosin concentration multiplier.
        i0: (nuclei) incident light per channel, in [0, 1].
        blur: Gaussian blur σ in px (0 = none).
        contrast: contrast about 0.5 (1 = unchanged).
        brightness: additive brightness, in intensity units of [0, 1].
        gamma: gamma exponent (1 = unchanged).
        noise: σ of additive Gaussian noise, in intensity units.
        speckle: (ultrasound) strength of multiplicative Rayleigh speckle, in [0, 1].
        attenuation: (ultrasound) depth attenuation; intensity × exp(−attenuation · depth/height).
        gain: (ultrasound) overall gain multiplier.
        lesion_echo: (ultrasound) lesion echogenicity relative to the surrounding tissue (< 1: hypoechoic).
        n_mean: (nuclei) mean number of nuclei per 64×64 area (Poisson).
        r_mean: mean object radius: px for nuclei, fraction of the image side for ultrasound lesions.
        r_std: standard deviation of the radius (same unit as ``r_mean``).
        ecc: maximal eccentricity-like flattening, in [0, 1).
        wobble: amplitude of the boundary harmonics 2–5 (relative radius).
        min_dist: (nuclei) minimal centre distance as a multiple of r1 + r2 (< 1 lets nuclei touch).
        pale_frac: (nuclei) fraction of pale nuclei (hard positives, 0.35× haematoxylin).
        n_cytoplasm: (nuclei) mean number of unannotated faint blobs per 64×64 area (hard negatives).
        shadow_prob: (ultrasound) probability of posterior shadowing (otherwise posterior enhancement).
        annotation: how the given mask relates to the true object mask.
        annotation_amount: disk radius in px (``dilate``/``erode``) or σ in px (``smooth``).
    """

    # appearance
    h_vec: Vec3 = (0.65, 0.70, 0.29)
    e_vec: Vec3 = (0.07, 0.99, 0.11)
    h_conc: float = 1.0
    e_conc: float = 0.35
    i0: Vec3 = (1.0, 1.0, 1.0)
    blur: float = 0.7
    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.04
    speckle: float = 0.6
    attenuation: float = 0.5
    gain: float = 1.0
    lesion_echo: float = 0.25
    # geometry
    n_mean: float = 9.0
    r_mean: float = 4.5
    r_std: float = 0.9
    ecc: float = 0.25
    wobble: float = 0.10
    min_dist: float = 0.8
    pale_frac: float = 0.25
    n_cytoplasm: float = 3.0
    shadow_prob: float = 0.5
    # annotation style
    annotation: str = "true"
    annotation_amount: float = 0.0

    def __post_init__(self) -> None:
        check_option("annotation style", self.annotation, ANNOTATION_STYLES)
        if self.annotation != "true" and self.annotation_amount <= 0:
            raise ValueError(
                f"annotation {self.annotation!r} needs annotation_amount > 0, got {self.annotation_amount}"
            )
        for name in ("blur", "noise", "r_std", "n_mean", "n_cytoplasm", "annotation_amount"):
            if getattr(self, name) < 0:
                raise ValueError(f"SiteConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("contrast", "gamma", "r_mean", "gain"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SiteConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("ecc", "pale_frac", "shadow_prob", "speckle"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"SiteConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _annotated(site: SiteConfig, style: str, amount: float) -> SiteConfig:
    return replace(site, annotation=style, annotation_amount=amount)


_NUCLEI_BASE = SiteConfig()
_NUCLEI_APPEAR = replace(
    _NUCLEI_BASE,
    h_vec=(0.50, 0.80, 0.33),
    e_vec=(0.20, 0.95, 0.20),
    h_conc=1.4,
    e_conc=0.18,
    i0=(0.92, 0.95, 1.0),
    blur=1.3,
    contrast=0.75,
    brightness=0.04,
    gamma=1.15,
    noise=0.08,
)
_NUCLEI_APPEAR_MILD = replace(
    _NUCLEI_BASE,
    h_vec=(0.58, 0.75, 0.31),
    e_vec=(0.13, 0.97, 0.15),
    h_conc=1.2,
    e_conc=0.27,
    i0=(0.96, 0.975, 1.0),
    blur=1.0,
    contrast=0.88,
    brightness=0.02,
    gamma=1.07,
    noise=0.06,
)
_NUCLEI_GEOM = replace(_NUCLEI_BASE, n_mean=16.0, r_mean=6.5, r_std=1.3, min_dist=0.65)

_US_BASE = SiteConfig(
    blur=0.8,
    noise=0.02,
    speckle=0.6,
    attenuation=0.5,
    gain=1.0,
    lesion_echo=0.25,
    r_mean=0.17,
    r_std=0.03,
    ecc=0.35,
    wobble=0.12,
)
_US_APPEAR = replace(
    _US_BASE,
    blur=1.4,
    noise=0.05,
    speckle=0.9,
    attenuation=0.9,
    gain=1.3,
    contrast=0.8,
    gamma=0.9,
    lesion_echo=0.35,
)
_US_APPEAR_MILD = replace(
    _US_BASE,
    blur=1.1,
    noise=0.035,
    speckle=0.75,
    attenuation=0.7,
    gain=1.15,
    contrast=0.9,
    gamma=0.95,
    lesion_echo=0.3,
)
_US_GEOM = replace(_US_BASE, r_mean=0.25, r_std=0.05, ecc=0.5, wobble=0.22)


def _family_presets(
    base: SiteConfig, appear: SiteConfig, mild: SiteConfig, geom: SiteConfig
) -> dict[str, SiteConfig]:
    return {
        "base": base,
        "appear": appear,
        "appear_mild": mild,
        "geom": geom,
        "dil1": _annotated(base, "dilate", 1),
        "dil2": _annotated(base, "dilate", 2),
        "ero1": _annotated(base, "erode", 1),
        "ero2": _annotated(base, "erode", 2),
        "smooth2": _annotated(base, "smooth", 2),
        "appear_dil2": _annotated(appear, "dilate", 2),
        "appear_mild_dil2": _annotated(mild, "dilate", 2),
    }


#: family -> preset name -> site.
SITE_PRESETS: dict[str, dict[str, SiteConfig]] = {
    "nuclei": _family_presets(_NUCLEI_BASE, _NUCLEI_APPEAR, _NUCLEI_APPEAR_MILD, _NUCLEI_GEOM),
    "ultrasound": _family_presets(_US_BASE, _US_APPEAR, _US_APPEAR_MILD, _US_GEOM),
}
SITE_PRESETS["nuclei_mc"] = SITE_PRESETS["nuclei"]


def site_names(family: str = "nuclei") -> list[str]:
    """The preset site names of ``family``."""
    check_option("synthetic family", family, FAMILIES)
    return list(SITE_PRESETS[family])


def site_preset(family: str, name: str) -> SiteConfig:
    """The preset site ``name`` of ``family`` (``ValueError`` listing the presets otherwise)."""
    check_option("synthetic family", family, FAMILIES)
    check_option(f"{family} site", name, list(SITE_PRESETS[family]))
    return SITE_PRESETS[family][name]


# -- shared pieces ---------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise (Gaussian-filtered white noise).

    For large ``sigma`` the noise is filtered on a grid coarsened by ``sigma // 2`` and bilinearly upsampled,
    which has the same spectrum up to the interpolation and costs far less.
    """
    factor = max(1, int(sigma // 2))
    coarse = (shape[0] // factor + 2, shape[1] // factor + 2)
    field_ = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="wrap")
    if factor > 1:
        field_ = ndimage.zoom(field_, factor, order=1)[: shape[0], : shape[1]]
    field_ = field_[: shape[0], : shape[1]]
    return np.asarray((field_ - field_.mean()) / (field_.std() + 1e-8))


def _blob(
    rng: np.random.Generator, radius: float, ecc: float, wobble: float, n_harmonics: int = 4
) -> tuple[np.ndarray, np.ndarray, int]:
    """One irregular ellipse on a local grid.

    Returns:
        ``inside`` (h, w) bool, ``alpha`` (h, w) float in [0, 1] (1-px anti-aliased edge), and the half
        size of the grid (the blob's centre is at index ``half``).
    """
    a = radius
    b = radius * (1.0 - rng.uniform(0.0, ecc))
    angle = rng.uniform(0.0, np.pi)
    amps = rng.uniform(-wobble, wobble, n_harmonics) / np.sqrt(np.arange(1, n_harmonics + 1))
    phases = rng.uniform(0.0, 2 * np.pi, n_harmonics)
    half = int(np.ceil(a * (1.0 + np.abs(amps).sum()))) + 2
    grid = np.arange(-half, half + 1, dtype=np.float64)
    yy, xx = grid[:, None], grid[None, :]
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / a
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / b
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    orders = np.arange(2, n_harmonics + 2)[:, None, None]
    boundary = 1.0 + np.einsum("k,kij->ij", amps, np.cos(orders * theta + phases[:, None, None]))
    signed = (boundary - rho) * b  # ≈ px inside the boundary
    alpha = np.clip(0.5 + signed, 0.0, 1.0)
    return signed >= 0, alpha, half


def _paste(canvas: np.ndarray, patch: np.ndarray, cy: int, cx: int, half: int, *, op: str) -> None:
    """Combine ``patch`` (centred at (cy, cx)) into ``canvas`` in place with ``max`` or ``or``."""
    h, w = canvas.shape
    y0, x0 = cy - half, cx - half
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + patch.shape[0]), min(w, x0 + patch.shape[1])
    if ys >= ye or xs >= xe:
        return
    sub = patch[ys - y0 : ye - y0, xs - x0 : xe - x0]
    if op == "or":
        canvas[ys:ye, xs:xe] |= sub
    else:
        np.maximum(canvas[ys:ye, xs:xe], sub, out=canvas[ys:ye, xs:xe])


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx**2 + yy**2 <= radius**2 + 1e-9)


def apply_annotation(mask: np.ndarray, style: str, amount: float) -> np.ndarray:
    """Apply an annotation style to a true mask.

    Args:
        mask: (H, W) bool true mask.
        style: ``true`` | ``dilate`` | ``erode`` | ``smooth``.
        amount: disk radius in px (dilate/erode), Gaussian σ in px (smooth).

    Returns:
        (H, W) bool annotated mask. Erosion treats the outside of the array as foreground
        (``border_value=1``) so that objects cut by the border keep their border pixels.
    """
    check_option("annotation style", style, ANNOTATION_STYLES)
    if style == "true" or amount <= 0:
        return mask.copy()
    if style == "dilate":
        return np.asarray(ndimage.binary_dilation(mask, structure=_disk(amount)))
    if style == "erode":
        return np.asarray(ndimage.binary_erosion(mask, structure=_disk(amount), border_value=1))
    return np.asarray(ndimage.gaussian_filter(mask.astype(np.float64), amount) > 0.5)


def _finish(image: np.ndarray, site: SiteConfig, rng: np.random.Generator) -> np.ndarray:
    """Blur, contrast/brightness, gamma and additive noise, then clip; ``image`` (H, W[, C]) float."""
    if site.blur > 0:
        sigma = (site.blur, site.blur, 0.0) if image.ndim == 3 else site.blur
        image = ndimage.gaussian_filter(image, sigma)
    image = (image - 0.5) * site.contrast + 0.5 + site.brightness
    image = np.clip(image, 0.0, 1.0) ** site.gamma
    image = image + site.noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0)


# -- nuclei ----------------------------------------------------------------------------------------------


def _nuclei(
    site: SiteConfig, size: int, geo: np.random.Generator, tex: np.random.Generator
) -> tuple[np.ndarray, ...]:
    pad = 12
    side = size + 2 * pad
    area = side * side / 64.0**2
    n = int(geo.poisson(site.n_mean * area))
    centres: list[tuple[float, float, float]] = []
    for _ in range(n):
        for _try in range(30):
            r = max(1.5, geo.normal(site.r_mean, site.r_std))
            cy, cx = geo.uniform(0, side, 2)
            if all((cy - y) ** 2 + (cx - x) ** 2 >= (site.min_dist * (r + rr)) ** 2 for y, x, rr in centres):
                centres.append((cy, cx, r))
                break
    hema = np.zeros((side, side))
    true_mask = np.zeros((side, side), dtype=bool)
    for cy, cx, r in centres:
        inside, alpha, half = _blob(geo, r, site.ecc, site.wobble)
        density = geo.uniform(0.8, 1.2) * (0.35 if geo.uniform() < site.pale_frac else 1.0)
        _paste(hema, alpha * density, round(cy), round(cx), half, op="max")
        _paste(true_mask, inside, round(cy), round(cx), half, op="or")

    chromatin = _smooth_noise(tex, (side, side), 0.8)
    hema = hema * (1.0 + 0.3 * chromatin)
    cyto = np.zeros((side, side))
    for _ in range(int(tex.poisson(site.n_cytoplasm * area))):
        _inside, alpha, half = _blob(tex, tex.uniform(6.0, 10.0), 0.4, 0.15)
        soft = ndimage.gaussian_filter(alpha, 2.0) * tex.uniform(0.12, 0.22)
        _paste(cyto, soft, int(tex.integers(0, side)), int(tex.integers(0, side)), half, op="max")
    hema = hema + cyto

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    angle = tex.uniform(0, np.pi)
    period = tex.uniform(5.0, 9.0)
    warp = _smooth_noise(tex, (side, side), 6.0)
    stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + 2.0 * warp)
    patches = _smooth_noise(tex, (side, side), 8.0) > -0.3
    fibres = np.clip(stripes, 0.0, 1.0) ** 3 * patches
    eosin = np.clip(1.0 + 0.25 * _smooth_noise(tex, (side, side), 10.0) + 0.5 * fibres, 0.2, None)

    od = site.h_conc * hema[..., None] * np.asarray(site.h_vec) + site.e_conc * eosin[..., None] * np.asarray(
        site.e_vec
    )
    rgb = np.asarray(site.i0) * np.exp(-od)
    rgb = _finish(rgb, site, tex)
    ann = apply_annotation(true_mask, site.annotation, site.annotation_amount)
    crop = (slice(pad, pad + size), slice(pad, pad + size))
    return rgb[crop], true_mask[crop], ann[crop]


def _typed_nuclei(
    site: SiteConfig, size: int, geo: np.random.Generator, tex: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nuclei of :data:`NUCLEUS_TYPES` on the H&E background of :func:`_nuclei`.

    Returns:
        rgb (size, size, 3) float, true class map, annotated class map (size, size) uint8, and the annotated
        binary mask.
    """
    pad = 12
    side = size + 2 * pad
    area = side * side / 64.0**2
    shares = np.asarray([t[5] for t in NUCLEUS_TYPES])
    n = int(geo.poisson(site.n_mean * area))
    centres: list[tuple[float, float, float, int]] = []
    for _ in range(n):
        kind = int(geo.choice(len(NUCLEUS_TYPES), p=shares / shares.sum()))
        factor = NUCLEUS_TYPES[kind][1]
        for _try in range(30):
            r = max(1.5, geo.normal(site.r_mean * factor, site.r_std * factor))
            cy, cx = geo.uniform(0, side, 2)
            if all(
                (cy - y) ** 2 + (cx - x) ** 2 >= (site.min_dist * (r + rr)) ** 2 for y, x, rr, _k in centres
            ):
                centres.append((cy, cx, r, kind))
                break
    hema = np.zeros((side, side))
    true_classes = np.zeros((side, side), dtype=np.uint8)
    for cy, cx, r, kind in centres:
        _name, _factor, ecc, wobble, density, _share = NUCLEUS_TYPES[kind]
        inside, alpha, half = _blob(geo, r, ecc, wobble)
        dens = density * geo.uniform(0.85, 1.15)
        _paste(hema, alpha * dens, round(cy), round(cx), half, op="max")
        layer = np.zeros((side, side), dtype=bool)
        _paste(layer, inside, round(cy), round(cx), half, op="or")
        true_classes[layer] = kind + 1
    hema = hema * (1.0 + 0.3 * _smooth_noise(tex, (side, side), 0.8))
    eosin = np.clip(1.0 + 0.25 * _smooth_noise(tex, (side, side), 10.0), 0.2, None)
    od = site.h_conc * hema[..., None] * np.asarray(site.h_vec) + site.e_conc * eosin[..., None] * np.asarray(
        site.e_vec
    )
    rgb = _finish(np.asarray(site.i0) * np.exp(-od), site, tex)
    classes = np.zeros_like(true_classes)
    for label in range(1, len(NUCLEUS_TYPES) + 1):  # later types win where annotations overlap
        classes[apply_annotation(true_classes == label, site.annotation, site.annotation_amount)] = label
    crop = (slice(pad, pad + size), slice(pad, pad + size))
    return rgb[crop], true_classes[crop], classes[crop], classes[crop] > 0


# -- ultrasound ------------------------------------------------------------------------------------------


def _ultrasound(
    site: SiteConfig, size: int, geo: np.random.Generator, tex: np.random.Generator
) -> tuple[np.ndarray, ...]:
    pad = max(4, size // 8)
    side = size + 2 * pad
    r = max(3.0, size * geo.normal(site.r_mean, site.r_std))
    cy = pad + size * geo.uniform(0.38, 0.58)
    cx = pad + size * geo.uniform(0.35, 0.65)
    inside, alpha_small, half = _blob(geo, r, site.ecc, site.wobble, n_harmonics=5)
    shadow = geo.uniform() < site.shadow_prob
    lesion = np.zeros((side, side), dtype=bool)
    alpha = np.zeros((side, side))
    _paste(lesion, inside, round(cy), round(cx), half, op="or")
    _paste(alpha, alpha_small, round(cy), round(cx), half, op="max")

    yy = np.mgrid[0:side, 0:side][0].astype(np.float64) / side
    warp = _smooth_noise(tex, (side, side), side / 6)
    layers = np.sin(2 * np.pi * (yy * tex.uniform(2.0, 4.0) + 0.15 * warp))
    tissue = 0.5 + 0.12 * layers + 0.08 * _smooth_noise(tex, (side, side), side / 10)
    tissue = np.where(yy < 0.08, tissue + 0.2, tissue)  # bright skin line
    inner = site.lesion_echo * (1.0 + 0.2 * _smooth_noise(tex, (side, side), 2.0))
    echo = tissue * (1.0 - alpha) + tissue * inner * alpha

    below = np.maximum.accumulate(alpha, axis=0) - alpha
    below = ndimage.gaussian_filter(below, (0.0, 2.0))
    depth = np.clip(np.cumsum(below > 0.05, axis=0) / (0.4 * side), 0.0, 1.0)
    strength = -0.55 if shadow else 0.45
    echo = echo * (1.0 + strength * below * (0.4 + 0.6 * depth))

    echo = echo * np.exp(-site.attenuation * yy) * site.gain
    real = ndimage.gaussian_filter(tex.standard_normal((side, side)), 0.7)
    imag = ndimage.gaussian_filter(tex.standard_normal((side, side)), 0.7)
    rayleigh = np.hypot(real, imag)
    rayleigh /= rayleigh.mean() + 1e-8
    echo = echo * ((1.0 - site.speckle) + site.speckle * rayleigh)
    grey = _finish(echo, site, tex)
    ann = apply_annotation(lesion, site.annotation, site.annotation_amount)
    crop = (slice(pad, pad + size), slice(pad, pad + size))
    return grey[crop][..., None], lesion[crop], ann[crop]


# -- public API ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticData:
    """Generated arrays.

    Attributes:
        images: (N, H, W, C) uint8, C = 3 (RGB) or 1.
        masks: (N, H, W) bool, the site's annotation (what a loader returns as ``mask``).
        true_masks: (N, H, W) bool, the true object masks before the annotation style.
        ids: N ids, ``"0000"``, ``"0001"``, …
        classes: (N, H, W) uint8 annotated class maps (family ``nuclei_mc``; ``None`` otherwise).
    """

    images: np.ndarray
    masks: np.ndarray
    true_masks: np.ndarray
    ids: tuple[str, ...] = field(default=())
    classes: np.ndarray | None = None


def _resolve_site(family: str, site: str | SiteConfig) -> tuple[str, SiteConfig]:
    check_option("synthetic family", family, FAMILIES)
    if isinstance(site, SiteConfig):
        return "custom", site
    return site, site_preset(family, site)


def generate_sample(
    family: str, site: str | SiteConfig, *, seed: int, index: int, size: int = 64, channels: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate image ``index`` of the draw ``seed``.

    Args:
        family: ``nuclei`` or ``ultrasound``.
        site: a preset name (:func:`site_names`) or a :class:`SiteConfig`.
        seed: the draw; geometry and texture streams are seeded from ``(seed, index)``.
        index: the image's index within the draw.
        size: output side in px (square), >= 16.
        channels: 3 (RGB; ultrasound grey is replicated) or 1 (nuclei are converted to luminance).

    Returns:
        ``image`` (size, size, channels) uint8, annotated ``mask`` (size, size) bool, and the true mask
        (size, size) bool.
    """
    _name, cfg = _resolve_site(family, site)
    if size < 16:
        raise ValueError(f"synthetic size must be >= 16, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"synthetic channels must be 1 or 3, got {channels}")
    if seed < 0 or index < 0:
        raise ValueError(f"synthetic seed and index must be >= 0, got seed={seed}, index={index}")
    fam = FAMILIES.index(family)
    geo = np.random.default_rng([seed, index, fam, 0])
    tex = np.random.default_rng([seed, index, fam, 1])
    if family == "nuclei":
        image, true_mask, mask = _nuclei(cfg, size, geo, tex)
    elif family == "nuclei_mc":
        image, true_classes, _classes, mask = _typed_nuclei(cfg, size, geo, tex)
        true_mask = true_classes > 0
    else:
        image, true_mask, mask = _ultrasound(cfg, size, geo, tex)
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif channels == 1 and image.shape[-1] == 3:
        image = (image @ np.array([0.299, 0.587, 0.114]))[..., None]
    image_u8 = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image_u8), np.ascontiguousarray(mask), np.ascontiguousarray(true_mask)


def generate_class_map(site: str | SiteConfig, *, seed: int, index: int, size: int = 64) -> np.ndarray:
    """The annotated class map (size, size) uint8 of image ``index`` of the ``nuclei_mc`` draw ``seed``.

    Labels index :data:`MULTICLASS_NAMES` (0 background, 1 lymphocyte, 2 epithelial, 3 spindle); the binary
    ``mask`` of :func:`generate_sample` is ``class map > 0``.
    """
    _name, cfg = _resolve_site("nuclei_mc", site)
    if size < 16:
        raise ValueError(f"synthetic size must be >= 16, got {size}")
    fam = FAMILIES.index("nuclei_mc")
    geo = np.random.default_rng([seed, index, fam, 0])
    tex = np.random.default_rng([seed, index, fam, 1])
    return np.ascontiguousarray(_typed_nuclei(cfg, size, geo, tex)[2])


def generate(
    family: str, site: str | SiteConfig, *, n: int, seed: int = 0, size: int = 64, channels: int = 3
) -> SyntheticData:
    """Generate ``n`` images of one site in memory (see :func:`generate_sample`)."""
    if n < 1:
        raise ValueError(f"synthetic n must be >= 1, got {n}")
    samples = [
        generate_sample(family, site, seed=seed, index=i, size=size, channels=channels) for i in range(n)
    ]
    return SyntheticData(
        images=np.stack([s[0] for s in samples]),
        masks=np.stack([s[1] for s in samples]),
        true_masks=np.stack([s[2] for s in samples]),
        ids=tuple(f"{i:04d}" for i in range(n)),
        classes=np.stack([generate_class_map(site, seed=seed, index=i, size=size) for i in range(n)])
        if family == "nuclei_mc"
        else None,
    )


def describe(
    family: str, site: str | SiteConfig, *, n: int, seed: int, size: int, channels: int = 3
) -> dict[str, Any]:
    """The ``synthetic.json`` content describing a generation."""
    name, cfg = _resolve_site(family, site)
    extra = {"class_names": list(MULTICLASS_NAMES)} if family == "nuclei_mc" else {}
    return {
        **extra,
        "schema": 1,
        "generator_version": GENERATOR_VERSION,
        "family": family,
        "site": name,
        "site_config": cfg.to_dict(),
        "n": n,
        "seed": seed,
        "size": size,
        "channels": channels,
    }


def write_synthetic(
    out_dir: str | Path,
    family: str,
    site: str | SiteConfig,
    n: int,
    seed: int = 0,
    size: int = 64,
    *,
    channels: int = 3,
) -> Path:
    """Write a generated site as ``out_dir/{images,masks}/<id>.png`` plus ``out_dir/synthetic.json``.

    Masks are 0/255 grey PNGs; the multi-class family also writes ``classes/<id>.png`` (class indices).
    The folder is written to a temporary sibling and renamed into place, so a partially written dataset is
    never visible.

    Returns:
        ``out_dir``.

    Raises:
        DatasetError: ``out_dir`` already exists (use :func:`ensure_synthetic` to reuse a matching one).
    """
    out = Path(out_dir)
    if out.exists():
        raise DatasetError(out, "already exists; refusing to overwrite (remove it or use another folder)")
    meta = describe(family, site, n=n, seed=seed, size=size, channels=channels)
    data = generate(family, site, n=n, seed=seed, size=size, channels=channels)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for image, mask, sample_id in zip(data.images, data.masks, data.ids):
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            pil.save(tmp / "images" / f"{sample_id}.png", compress_level=1)
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                tmp / "masks" / f"{sample_id}.png", compress_level=1
            )
        if data.classes is not None:  # class-index PNGs (0 = background), read by the synthetic: loader
            (tmp / "classes").mkdir()
            for classes, sample_id in zip(data.classes, data.ids):
                Image.fromarray(classes).save(tmp / "classes" / f"{sample_id}.png", compress_level=1)
        (tmp / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException as exc:  # also Ctrl-C: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, OSError) or not (out / "synthetic.json").is_file():
            raise  # (an OSError with the folder in place: another process wrote it first)
    return out


def ensure_synthetic(
    out_dir: str | Path,
    *,
    family: str = "nuclei",
    site: str | SiteConfig = "base",
    n: int = 40,
    seed: int = 0,
    size: int = 64,
    channels: int = 3,
) -> Path:
    """Generate ``out_dir`` unless it already holds exactly this generation.

    Raises:
        DatasetError: ``out_dir`` exists but its ``synthetic.json`` is missing or describes another
            generation (the differing keys are named); nothing is overwritten.
    """
    out = Path(out_dir)
    expected = describe(family, site, n=n, seed=seed, size=size, channels=channels)
    if not out.exists():
        write_synthetic(out, family, site, n, seed, size, channels=channels)
    meta_path = out / "synthetic.json"
    if not meta_path.is_file():
        raise DatasetError(meta_path, "missing: the folder exists but was not written by write_synthetic")
    try:
        found = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(meta_path, f"unreadable ({err})") from None
    if found != expected:
        keys = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        diffs = ", ".join(
            f"{k} differs"
            if k == "site_config"
            else f"{k}: found {found.get(k)!r}, requested {expected.get(k)!r}"
            for k in keys
        )
        raise DatasetError(meta_path, f"describes another generation ({diffs}); use another folder")
    return out
