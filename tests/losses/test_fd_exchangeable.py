"""L_fd^exch: which pairs are formed, hand values, fallback, gradients, NaN safety."""

from __future__ import annotations

import math

import pytest
import torch

from fdseg.losses import PRESETS, exchange_pairs, exchangeable_fd_term, fd_term

EPS = 1e-6


def _pairs(tensor: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(i), int(j)) for i, j in tensor.tolist()]


def test_shift_pairs() -> None:
    assert _pairs(exchange_pairs(4)) == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert _pairs(exchange_pairs(4, shift=2)) == [(0, 2), (1, 3), (2, 0), (3, 1)]
    assert _pairs(exchange_pairs(5, shift=3)) == [(0, 3), (1, 4), (2, 0), (3, 1), (4, 2)]
    assert exchange_pairs(4, shift=4).shape == (0, 2)  # only same-image pairs: none kept
    assert exchange_pairs(1).shape == (0, 2)
    assert exchange_pairs(4).dtype == torch.long


def test_shuffle_pairs_come_from_the_generator_only() -> None:
    global_state = torch.get_rng_state()
    a = exchange_pairs(8, pairing="shuffle", generator=torch.Generator().manual_seed(7))
    b = exchange_pairs(8, pairing="shuffle", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is untouched
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(7)).tolist()
    assert _pairs(a) == [(i, p) for i, p in enumerate(perm) if p != i]
    anchors, partners = a[:, 0].tolist(), a[:, 1].tolist()
    assert len(set(partners)) == len(partners) and all(i != j for i, j in zip(anchors, partners))
    seeds = {
        tuple(
            map(
                tuple,
                exchange_pairs(8, pairing="shuffle", generator=torch.Generator().manual_seed(s)).tolist(),
            )
        )
        for s in range(5)
    }
    assert len(seeds) > 1
    # README: two independent shuffles, all B rows kept (same-image pairs included)
    gen = torch.Generator().manual_seed(3)
    readme = exchange_pairs(6, pairing="shuffle", generator=gen, independent_permutations=True)
    gen = torch.Generator().manual_seed(3)
    p1, p2 = torch.randperm(6, generator=gen).tolist(), torch.randperm(6, generator=gen).tolist()
    assert _pairs(readme) == list(zip(p1, p2))


def test_cross_source_pairs_and_fallback() -> None:
    source = torch.tensor([0, 0, 1, 1, 0])
    pairs = _pairs(exchange_pairs(5, pairing="cross_source", source=source))
    assert pairs == [(0, 2), (1, 2), (2, 4), (3, 4), (4, 2)]
    assert all(source[i] != source[j] for i, j in pairs)
    assert _pairs(exchange_pairs(3, pairing="cross_source", source=[2, 0, 1])) == [(0, 1), (1, 2), (2, 0)]
    # a single source: the shift pairing, and the term says so
    single = torch.zeros(4, dtype=torch.long)
    assert _pairs(exchange_pairs(4, pairing="cross_source", source=single)) == _pairs(exchange_pairs(4))
    features, mask = torch.rand(4, 2, 4, 4), torch.zeros(4, 1, 4, 4)
    mask[..., :2, :] = 1.0
    term = exchangeable_fd_term(features, mask, pairing="cross_source", source=single)
    assert term.fallback and term.pairing == "shift"
    mixed = exchangeable_fd_term(features, mask, pairing="cross_source", source=torch.tensor([0, 1, 0, 1]))
    assert not mixed.fallback and mixed.pairing == "cross_source"


def _two_images() -> tuple[torch.Tensor, torch.Tensor]:
    """C = 1; image 0: fg 3, bg 1; image 1: fg 0.5, bg 2 (constant regions)."""
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2] = 1.0
    mask[1, :, :, :1] = 1.0
    fg = torch.tensor([3.0, 0.5]).view(2, 1, 1, 1)
    bg = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    return mask * fg + (1 - mask) * bg, mask


def test_hand_values_shift_and_cross_source() -> None:
    features, mask = _two_images()
    shift = exchangeable_fd_term(features, mask)
    v01, v10 = -math.log((3.0 - 2.0) ** 2 + EPS), -math.log((0.5 - 1.0) ** 2 + EPS)
    assert shift.per_pair.tolist() == pytest.approx([v01, v10], rel=1e-6, abs=1e-6)
    assert float(shift.value) == pytest.approx((v01 + v10) / 2, rel=1e-6, abs=1e-6)
    cross = exchangeable_fd_term(features, mask, pairing="cross_source", source=torch.tensor([0, 1]))
    both = -math.log((3.0 - 2.0) ** 2 + (0.5 - 1.0) ** 2 + EPS)  # one log of the sum (Definition 2)
    assert cross.per_pair.tolist() == pytest.approx([both, both], rel=1e-6)
    # batch_l2 (README form): -log of the pooled squared gaps over the pairs
    l2 = exchangeable_fd_term(features, mask, batch="batch_l2")
    assert float(l2.value) == pytest.approx(-math.log(1.0 + 0.25 + EPS), rel=1e-6)


def test_pairs_skip_missing_foreground_or_background() -> None:
    features = torch.rand(3, 2, 4, 4)
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, :, :2] = 1.0  # fg and bg
    mask[1] = 1.0  # fg only
    # image 2: bg only
    term = exchangeable_fd_term(features, mask)  # pairs (0,1) (1,2) (2,0)
    assert term.valid.tolist() == [False, True, False]  # 1 has no bg; 2 has no fg
    assert float(term.value) == pytest.approx(float(term.per_pair[1]), rel=1e-6)
    cross = exchangeable_fd_term(features, mask, pairing="cross_source", source=torch.tensor([0, 1, 1]))
    assert not cross.valid.any() and float(cross.value) == 0.0


@pytest.mark.parametrize("pairing", ["shift", "shuffle", "cross_source"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_gradcheck_and_no_nan(pairing: str, preset: str) -> None:
    torch.manual_seed(0)
    features = torch.randn(4, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(4, 1, 8, 8, dtype=torch.float64) > 0.5).double()
    mask[3] = 0.0
    source = torch.tensor([0, 1, 0, 1])

    def value(f: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return exchangeable_fd_term(
            f, mask, pairing=pairing, source=source, generator=gen, **PRESETS[preset]
        ).value  # type: ignore[arg-type]

    assert torch.autograd.gradcheck(value, (features,))
    empty = torch.zeros_like(mask)
    out = exchangeable_fd_term(
        features, empty, pairing=pairing, source=source, generator=torch.Generator(), **PRESETS[preset]
    )  # type: ignore[arg-type]
    out.value.backward()
    assert float(out.value.detach()) == 0.0
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert float(features.grad.abs().sum()) == 0.0


def test_exchange_uses_the_same_prototypes_as_fd() -> None:
    """With a batch where every image is its own partner's twin, exch equals L_fd."""
    features, mask = _two_images()
    twin_f, twin_m = torch.cat([features[:1], features[:1]]), torch.cat([mask[:1], mask[:1]])
    assert float(exchangeable_fd_term(twin_f, twin_m).value) == pytest.approx(
        float(fd_term(twin_f, twin_m).value)
    )


def test_bad_pairing_inputs() -> None:
    features, mask = torch.rand(2, 2, 4, 4), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"unknown pairing 'shufle'.*did you mean 'shuffle'"):
        exchange_pairs(4, pairing="shufle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"needs source"):
        exchangeable_fd_term(features, mask, pairing="cross_source")
    with pytest.raises(ValueError, match=r"source: 3 entries for a batch of 2"):
        exchangeable_fd_term(features, mask, pairing="cross_source", source=[0, 1, 1])
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        exchange_pairs(4, pairing="shuffle")
    with pytest.raises(ValueError, match=r"shift must be an int >= 1"):
        exchange_pairs(4, shift=0)
    with pytest.raises(ValueError, match=r"independent_permutations=True needs pairing='shuffle'"):
        exchange_pairs(4, independent_permutations=True)
    with pytest.raises(ValueError, match=r"unknown L_fd option \['chanel'\].*did you mean 'channel'"):
        exchangeable_fd_term(features, mask, chanel="mean_of_log")
    with pytest.raises(ValueError, match=r"source: expected a \(B,\) integer tensor"):
        exchangeable_fd_term(features, mask, pairing="cross_source", source=torch.tensor([0.0, 1.0]))
