"""Head and Method are typed records: every hook is a named field, checked when the record is built."""
import pytest
from torch import nn

from adapterkit.adapters import METHODS, Method, MethodSettings, register_method
from adapterkit.errors import AdapterkitError
from adapterkit.heads import HEADS, Head, PooledClassifier, register_head


def _module(hidden, task, labels):
    return PooledClassifier(hidden, task, labels)


def _ce(logits, labels):
    return nn.functional.cross_entropy(logits, labels)


def test_a_misspelt_head_hook_is_rejected_not_ignored():
    with pytest.raises(TypeError, match="metrics_fnn"):
        Head(name="x", module=_module, loss=_ce, metrics_fnn=lambda *a: {})
    with pytest.raises(TypeError, match="extra"):  # the old untyped hook dict is gone
        Head(name="x", module=_module, loss=_ce, extra={"settings": None})


@pytest.mark.parametrize("kwargs,message", [
    (dict(decode="label"), "decode must be callable"),
    (dict(label_kind="classes"), "label_kind 'classes'"),
    (dict(module=None), "give auto_class"),
    (dict(settings=dict), "settings must be a pydantic model class"),
])
def test_bad_head_hooks_name_the_field(kwargs, message):
    with pytest.raises(AdapterkitError, match=message):
        register_head(Head(**{"name": "x", "module": _module, "loss": _ce, **kwargs}))
    assert "x" not in HEADS


def test_method_record_is_typed_and_full_is_described_by_properties():
    with pytest.raises(TypeError, match="merge_able"):
        Method("x", MethodSettings, lambda s, m, c: None, merge_able=True)
    with pytest.raises(AdapterkitError, match="settings must be a pydantic model class"):
        Method("x", dict, lambda s, m, c: None)
    with pytest.raises(AdapterkitError, match="expected a Method record"):
        register_method({"name": "x"})
    full = METHODS["full"]
    assert (full.trains_base, full.mergeable) == (True, True)
    assert not any(m.trains_base for name, m in METHODS.items() if name != "full")


def test_head_metrics_become_a_tuple():
    h = Head(name="x", module=_module, loss=_ce, metrics=["accuracy"])
    assert h.metrics == ("accuracy",)
