import pytest
import torch

from fdseg._checks import check_keys, check_option, check_shape, did_you_mean
from fdseg.registry import Registry


def test_registry_build_and_did_you_mean() -> None:
    reg: Registry[dict] = Registry("widget")

    @reg.register("attention_unet")
    def make(**kw: int) -> dict:
        return kw

    assert reg.build("attention_unet", a=1) == {"a": 1}
    assert reg.names() == ["attention_unet"]
    with pytest.raises(KeyError, match="did you mean 'attention_unet'"):
        reg.build("attention_unte")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("attention_unet")(make)


def test_check_shape_messages() -> None:
    check_shape(torch.zeros(2, 1, 4, 4), "B 1 H W", name="mask")
    with pytest.raises(ValueError, match=r"mask: expected 4 dims \(B 1 H W\), got shape \(2, 4, 4\)"):
        check_shape(torch.zeros(2, 4, 4), "B 1 H W", name="mask")
    with pytest.raises(ValueError, match="expected size 1 at dim 1"):
        check_shape(torch.zeros(2, 3, 4, 4), "B 1 H W", name="mask")
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        check_shape([1, 2], "B", name="x")  # type: ignore[arg-type]


def test_check_option_and_keys() -> None:
    assert check_option("pairing", "shift", ["shift", "shuffle"]) == "shift"
    with pytest.raises(ValueError, match=r"did you mean 'shuffle'.*valid options"):
        check_option("pairing", "shufle", ["shift", "shuffle"])
    with pytest.raises(ValueError, match=r"unknown option \['bogus'\]"):
        check_keys("option", ["bogus"], ["size"])
    assert did_you_mean("zzz", ["abc"]) == ""
