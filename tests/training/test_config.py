"""ExperimentConfig: YAML round trip, typed overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdseg.training.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_paper() -> None:
    cfg = ExperimentConfig()
    assert (cfg.train.epochs_phase1, cfg.train.epochs_phase2, cfg.train.batch_size) == (100, 75, 4)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps) == (1e-4, 0.004, 1e-7)
    assert cfg.loss.lambda_kwargs == {"lambda_max": 0.001}
    assert cfg.schema == 1


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = ExperimentConfig().with_overrides(["loss.layers=[enc1, bottleneck]", "model.kwargs.base_width=8"])
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert ExperimentConfig.from_yaml(path) == cfg


def test_overrides_are_typed() -> None:
    cfg = ExperimentConfig().with_overrides(
        [
            "train.batch_size=8",
            "optim.lr=3e-4",
            "loss.fd=true",
            "train.max_steps=null",
            "loss.layers=enc1,dec1",
        ]
    )
    assert cfg.train.batch_size == 8 and isinstance(cfg.train.batch_size, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.loss.fd is True
    assert cfg.train.max_steps is None
    assert cfg.loss.layers == ("enc1", "dec1")
    # int given where a float is declared is accepted and converted
    assert isinstance(ExperimentConfig().with_overrides(["optim.lr=1"]).optim.lr, float)


@pytest.mark.parametrize(("given", "kept"), [("false", "false"), ("true", "true"), ("'false'", "false")])
def test_deterministic_takes_yaml_booleans_and_names(tmp_path: Path, given: str, kept: str) -> None:
    # `--set train.deterministic=false` and `deterministic: false` in a YAML file are YAML booleans
    cfg = ExperimentConfig().with_overrides([f"train.deterministic={given}"])
    assert cfg.train.deterministic == kept
    path = tmp_path / "c.yaml"
    path.write_text(f"schema: 1\ntrain:\n  deterministic: {given}\n", encoding="utf-8")
    assert ExperimentConfig.from_yaml(path).train.deterministic == kept
    with pytest.raises(ValueError, match=r"train.deterministic 'maybe'.*\['false', 'true', 'warn'\]"):
        ExperimentConfig().with_overrides(["train.deterministic=maybe"])


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match=r"train\.batch_sise.*did you mean 'batch_size'"):
        ExperimentConfig().with_overrides(["train.batch_sise=3"])
    with pytest.raises(KeyError, match="did you mean 'train'"):
        ExperimentConfig().with_overrides(["trian.seed=1"])
    with pytest.raises(KeyError, match=r"unknown config key 'optim\.lrr'; did you mean 'lr'"):
        ExperimentConfig.from_dict({"optim": {"lrr": 1e-3}})


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(TypeError, match=r"'train\.batch_size' expects int, got 'abc'"):
        ExperimentConfig().with_overrides(["train.batch_size=abc"])
    with pytest.raises(TypeError, match=r"'optim\.lr' expects float, got True"):
        ExperimentConfig().with_overrides(["optim.lr=true"])
    with pytest.raises(TypeError, match=r"'loss\.fd' expects bool"):
        ExperimentConfig.from_dict({"loss": {"fd": "yes please"}})


def test_bad_values_raise_with_choices() -> None:
    with pytest.raises(ValueError, match=r"loss\.seg.*did you mean 'dice_iou'"):
        ExperimentConfig().with_overrides(["loss.seg=dice"])
    with pytest.raises(ValueError, match=r"loss\.exch=true needs loss\.fd=true"):
        ExperimentConfig().with_overrides(["loss.exch=true"])
    with pytest.raises(ValueError, match=r"must look like section\.key=value"):
        ExperimentConfig().with_overrides(["train.batch_size"])
    with pytest.raises(ValueError, match="schema 2 is not supported"):
        ExperimentConfig.from_dict({"schema": 2})


SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_configs_folder_is_found() -> None:
    assert {"demo", "smoke", "tnbc", "tnbc_monuseg"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    cfg = ExperimentConfig.from_yaml(REPO / "configs" / f"{name}.yaml")
    assert cfg.schema == 1


def test_loss_options_come_from_the_loss_registries() -> None:
    from fdseg.losses.segmentation import SEG_LOSSES
    from fdseg.losses.weights import LAMBDA_STRATEGIES

    with pytest.raises(ValueError, match=r"loss\.seg.*'focal'.*dice_bce.*dice_iou"):
        ExperimentConfig().with_overrides(["loss.seg=focal"])
    with pytest.raises(ValueError, match=r"loss\.lambda_strategy.*'cosine'.*schedule"):
        ExperimentConfig().with_overrides(["loss.lambda_strategy=cosine"])

    @SEG_LOSSES.register("focal_for_this_test")
    def _focal(**_: object) -> None:  # pragma: no cover - only its name matters here
        return None

    try:  # a loss registered after import is a valid config value at once: no second list to update
        assert (
            ExperimentConfig().with_overrides(["loss.seg=focal_for_this_test"]).loss.seg
            == "focal_for_this_test"
        )
    finally:
        SEG_LOSSES._items.pop("focal_for_this_test")
    assert "dual" in LAMBDA_STRATEGIES.names()


def test_differences_name_dotted_keys_inside_options_and_skip_ignored_ones() -> None:
    saved = ExperimentConfig().with_overrides(["model.kwargs.base_width=8", "train.batch_size=4"])
    asked = saved.with_overrides(["model.kwargs.base_width=16", "train.num_workers=2", "loss.fd=true"])
    assert saved.differences(asked, ignore={"train.num_workers"}) == [
        "loss.fd: False (saved) vs True",
        "model.kwargs.base_width: 8 (saved) vs 16",
    ]
    assert saved.differences(saved) == []
    ramp = saved.with_overrides(["loss.lambda_kwargs.ramp_epochs=3"])  # a key only one of them has
    assert saved.differences(ramp) == ["loss.lambda_kwargs.ramp_epochs: (not set) (saved) vs 3"]
    assert saved.flat()["train.batch_size"] == 4 and ExperimentConfig().flat()["model.kwargs"] == {}
