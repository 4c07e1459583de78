"""The one place adapterkit touches PEFT internals: registering a method name PEFT's closed `PeftType` enum lacks.

`peft.utils.register_peft_method` is public but refuses names outside `PeftType`, so we add the enum member
first (the only internal step), then call the public function. Checked against the PEFT versions pyproject allows.
"""

from __future__ import annotations

import enum
from typing import Any

from ..errors import AdapterkitError

# Same bounds as pyproject.toml's `peft>=0.18,<0.22` (0.17 does not import under transformers 5).
SUPPORTED = ((0, 18), (0, 22))


class PeftCompatibilityError(AdapterkitError):
    pass


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def check_peft_version(version: str | None = None) -> None:
    if version is None:
        import peft

        version = peft.__version__
    lo, hi = SUPPORTED
    if not (lo <= _version_tuple(version) < hi):
        raise PeftCompatibilityError(
            f"peft {version} is not supported by adapterkit's method registration (needs >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}); "
            "install a supported peft, e.g. pip install 'peft>=0.18,<0.22'"
        )


def _add_enum_member(enum_cls: type[enum.Enum], name: str) -> enum.Enum:
    """Add `name` (value == name) to a str-valued Enum, as if it had been declared in the class body."""
    if name in enum_cls.__members__:
        return enum_cls[name]
    member: Any = str.__new__(enum_cls, name)  # type: ignore[type-var]  # a str-valued Enum member, built by hand
    member._name_, member._value_ = name, name
    member.__objclass__ = enum_cls
    member._sort_order_ = len(enum_cls._member_names_)
    type.__setattr__(enum_cls, name, member)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[name] = member
    enum_cls._member_names_.append(name)
    return member


def register_peft_method(name: str, config_cls, model_cls, prefix: str | None = None):
    """Register a tuner with PEFT under `name` (lower case). Returns the new PeftType member. Idempotent."""
    check_peft_version()
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
        from peft.utils import PeftType
        from peft.utils import register_peft_method as peft_register
    except ImportError as e:
        raise PeftCompatibilityError(
            f"peft's method registry moved ({e}); adapterkit's {name} method needs peft>=0.18,<0.22"
        ) from None
    try:
        member = _add_enum_member(PeftType, name.upper())
        if (
            PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is config_cls
            and PEFT_TYPE_TO_TUNER_MAPPING.get(member) is model_cls
        ):
            return member
        peft_register(name=name, config_cls=config_cls, model_cls=model_cls, prefix=prefix)
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise PeftCompatibilityError(
            f"cannot register the {name!r} method with peft: {e}. PEFT's internals changed; use peft>=0.18,<0.22"
        ) from None
    if PeftType(name.upper()) is not member or PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is not config_cls:
        raise PeftCompatibilityError(f"registering {name!r} with peft did not take effect; use peft>=0.18,<0.22")
    return member
