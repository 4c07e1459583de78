"""Per-method default learning rates and warmup (issue #23): a recipe without `training.lr` or
`training.warmup_ratio` trains at its method's default; an explicit value (or a `--set`) wins; `null` asks for the
default again."""
import pytest

from adapterkit.adapters import METHODS, Method, MethodSettings
from adapterkit.config.schema import DEFAULT_LR, DEFAULT_WARMUP
from adapterkit.errors import AdapterkitError
from adapterkit.model import recipe_from_dict
from helpers import tiny_recipe


def _recipe(adapter, **training):
    """A recipe dict with `adapter` and no training.lr or warmup_ratio unless given (the tiny recipe's lr left out)."""
    return tiny_recipe("unused", {"train": "t.csv", "validation": "v.csv"}, "runs/x", backbone={"quantization": "none"},
                       replace={"adapter": adapter, "training": {"output_dir": "runs/x", **training}})


@pytest.mark.parametrize("adapter,want", [({"method": "lora"}, 5e-4), ({"method": "dora"}, 5e-4), ({"method": "bottleneck"}, 1.5e-3),
                                          ({"method": "full"}, 1e-4), ({"method": "ia3"}, DEFAULT_LR)])
def test_a_recipe_without_lr_takes_its_methods_default(adapter, want):
    r = recipe_from_dict(_recipe(adapter))
    assert r.training.lr == want == (METHODS[adapter["method"]].default_lr or DEFAULT_LR)
    assert r.to_dict()["training"]["lr"] == want   # the run's saved recipe.yaml records the value it trained at


def test_explicit_and_overridden_lr_win_and_null_is_the_default():
    assert recipe_from_dict(_recipe({"method": "full"}, lr=3e-5)).training.lr == 3e-5
    r = recipe_from_dict(_recipe({"method": "lora"}, lr=2e-3), ["training.lr=null", "adapter.method=full"])
    assert r.training.lr == 1e-4
    assert recipe_from_dict(_recipe({"method": "lora"}), ["training.lr=7e-4"]).training.lr == 7e-4


@pytest.mark.parametrize("bad", [0, -1e-3, float("inf"), True, "1e-3"])
def test_a_plugin_method_with_a_bad_default_lr_is_refused(bad):
    with pytest.raises(AdapterkitError, match="default_lr must be a positive number"):
        Method("x", MethodSettings, lambda s, m, c: None, default_lr=bad)


@pytest.mark.parametrize("method,want", [("lora", 0.06), ("bottleneck", 0.1), ("full", DEFAULT_WARMUP), ("ia3", DEFAULT_WARMUP)])
def test_a_recipe_without_warmup_takes_its_methods_default(method, want):
    r = recipe_from_dict(_recipe({"method": method}))
    assert r.training.warmup_ratio == want
    assert r.to_dict()["training"]["warmup_ratio"] == want


def test_explicit_warmup_wins_and_null_is_the_default():
    assert recipe_from_dict(_recipe({"method": "bottleneck"}, warmup_ratio=0.0)).training.warmup_ratio == 0.0
    r = recipe_from_dict(_recipe({"method": "lora"}, warmup_ratio=0.3), ["training.warmup_ratio=null", "adapter.method=bottleneck"])
    assert r.training.warmup_ratio == 0.1


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.1"])
def test_a_plugin_method_with_a_bad_default_warmup_is_refused(bad):
    with pytest.raises(AdapterkitError, match="default_warmup must be a share of steps"):
        Method("x", MethodSettings, lambda s, m, c: None, default_warmup=bad)
