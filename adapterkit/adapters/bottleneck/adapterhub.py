"""AdapterHub's bottleneck adapters in our format: a folder written by `adapters`' `save_adapter(dir, name,
with_head=True, use_safetensors=True)` (adapter_config.json, adapter.safetensors, and head_config.json +
model_head.safetensors) read into `adapter:` settings, our weight names and the head's. Torch-free until weights load.

Supported: BERT-family models; `seq_bn` (Pfeiffer: our `pfeiffer` with `adapter_input: post_norm`), `double_seq_bn`
(Houlsby: `houlsby`, reading the projection) and `par_bn` (He et al.: `parallel`), with `leave_out`, `ln_before`, any
float `scaling` and a transformers activation; a 2-layer tanh classification head (AdapterHub's default, which is
BERT's pooler and classifier). Anything else is refused by name: the same numbers could not come out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...files import read_json
from .families import FAMILIES

WEIGHTS, PICKLED = "adapter.safetensors", "pytorch_adapter.bin"
HEAD_CONFIG, HEAD_WEIGHTS, HEAD_PICKLED = "head_config.json", "model_head.safetensors", "pytorch_model_head.bin"
# AdapterHub settings that change what the adapter computes beyond what our bottleneck layer does, at their
# harmless values: a folder with another value is refused.
_PLAIN = {"phm_layer": False, "use_gating": False, "ln_after": False, "adapter_residual_before_ln": False}
_KEY = re.compile(r"^(?P<prefix>.*?)\.?(?P<block>layer\.\d+\.(?:attention\.)?output)\.adapters\.[^.]+\.(?P<rest>.+)$")


@dataclass(frozen=True)
class HubAdapter:
    """One AdapterHub adapter folder, read and checked."""

    folder: Path
    name: str
    model_type: str
    base: str  # the base model AdapterHub names (`model_name`)
    settings: dict  # our `adapter:` section (without `layers`: the base model's depth decides them)
    labels: list[str]
    leave_out: list[int]  # layers AdapterHub left without an adapter


def _refuse(folder: Path, what: str) -> ModelError:
    return ModelError(f"import-adapter: {folder}: {what}")


def _placement(folder: Path, c: dict) -> dict:
    if c.get("is_parallel"):
        if c.get("mh_adapter") or not c.get("output_adapter") or c.get("original_ln_before"):
            raise _refuse(folder, "a parallel adapter is converted only beside the feed-forward block (par_bn)")
        return {"placement": "parallel", "adapter_input": "projection"}
    if not (c.get("residual_before_ln") is True and c.get("original_ln_after")):
        raise _refuse(folder, "only residual_before_ln: true with original_ln_after: true (seq_bn, double_seq_bn)")
    placement = "houlsby" if c.get("mh_adapter") and c.get("output_adapter") else "pfeiffer"
    if placement == "pfeiffer" and (c.get("mh_adapter") or not c.get("output_adapter")):
        raise _refuse(folder, "an adapter after the attention block only has no placement here")
    return {"placement": placement, "adapter_input": "post_norm" if c.get("original_ln_before") else "projection"}


def read_adapter(folder: Path) -> HubAdapter:
    """The folder's adapter as our settings; refuses pickled weights and settings we cannot compute alike."""
    from transformers.activations import ACT2FN

    folder = Path(folder)
    cfg_file = folder / "adapter_config.json"
    if not cfg_file.is_file():
        raise _refuse(folder, "no adapter_config.json (not a folder written by AdapterHub's save_adapter)")
    cfg = read_json(cfg_file, "AdapterHub adapter config")
    c = cfg.get("config")
    if not isinstance(c, dict) or "reduction_factor" not in c:
        raise _refuse(folder, "adapter_config.json holds no bottleneck adapter config (config.reduction_factor)")
    if not (folder / WEIGHTS).is_file():
        if (folder / PICKLED).is_file():
            raise _refuse(
                folder,
                f"{PICKLED} is a pickle, which adapterkit never loads (unpickling runs code); save the adapter again "
                "with save_adapter(..., use_safetensors=True)",
            )
        raise _refuse(folder, f"no {WEIGHTS}")
    model_type = str(cfg.get("model_type"))
    if model_type not in FAMILIES or "attn_block" not in FAMILIES[model_type]:
        raise _refuse(folder, f"model_type {model_type!r}: adapters of BERT-family encoders are converted")
    for key, plain in _PLAIN.items():
        if c.get(key, plain) != plain:
            raise _refuse(folder, f"config.{key}: {c[key]!r} is not converted (only {plain!r})")
    if not isinstance(c.get("scaling", 1.0), (int, float)):
        raise _refuse(folder, f"config.scaling: {c['scaling']!r} (learned scaling) is not converted; a number is")
    activation = str(c.get("non_linearity", "relu")).lower()
    if activation not in ACT2FN:
        raise _refuse(folder, f"config.non_linearity: {activation!r} is not a transformers activation")
    hidden = int(cfg["hidden_size"])
    settings = {
        "method": "bottleneck",
        **_placement(folder, c),
        "bottleneck_size": max(1, hidden // int(c["reduction_factor"])),
        "activation": activation,
        "dropout": float(c.get("dropout", 0.0)),
        "scaling": float(c.get("scaling", 1.0)),
        "layer_norm": bool(c.get("ln_before")),
        "init_weights": "bert",
    }
    return HubAdapter(
        folder,
        str(cfg.get("name", folder.name)),
        model_type,
        str(cfg.get("model_name") or ""),
        settings,
        read_head_labels(folder),
        [int(i) for i in c.get("leave_out") or []],
    )


def read_head_labels(folder: Path) -> list[str]:
    """The class names of the saved head; refuses a folder without a head or with one we cannot compute alike."""
    if not (folder / HEAD_CONFIG).is_file():
        raise _refuse(folder, "no head saved (save_adapter(..., with_head=True)): an adapterkit run carries its head")
    if not (folder / HEAD_WEIGHTS).is_file():
        what = (
            f"{HEAD_PICKLED} is a pickle, which adapterkit never loads" if (folder / HEAD_PICKLED).is_file() else "no"
        )
        raise _refuse(folder, f"{what} {HEAD_WEIGHTS if what == 'no' else ''}".strip())
    h = read_json(folder / HEAD_CONFIG, "AdapterHub head config").get("config") or {}
    wanted = {"head_type": "classification", "layers": 2, "activation_function": "tanh", "use_pooler": False}
    for key, value in wanted.items():
        if h.get(key) != value:
            raise _refuse(folder, f"head {key}: {h.get(key)!r} is not converted (a {wanted} head is)")
    n = int(h["num_labels"])
    by_id = {int(i): str(name) for name, i in (h.get("label2id") or {}).items()}
    return [by_id.get(i, f"LABEL_{i}") for i in range(n)]


def adapter_weights(adapter: HubAdapter) -> dict[tuple[str, str, str], Any]:
    """{(block, part, param): tensor}: block as `layer.0.output` or `layer.0.attention.output`, part down/up/ln."""
    from safetensors.torch import load_file

    out = {}
    ln = adapter.settings["layer_norm"]
    mapped = {  # with ln_before, AdapterHub's down Sequential starts with the LayerNorm
        "adapter_up": "up",
        "adapter_down.0": "ln" if ln else "down",
        "adapter_down.1": "down" if ln else None,
        "adapter_norm_before": "ln",
    }
    for key, value in load_file(adapter.folder / WEIGHTS).items():
        m = _KEY.match(key)
        if m is None:
            raise _refuse(adapter.folder, f"weight {key} is not a bottleneck adapter weight")
        module, _, param = m["rest"].rpartition(".")
        part = mapped.get(module)
        if part is None:
            raise _refuse(adapter.folder, f"weight {key} has no counterpart in a bottleneck adapter")
        out[(m["block"], part, param)] = value
    return out


def head_weights(adapter: HubAdapter, prefix: str) -> dict:
    """AdapterHub's classification head (dropout, dense, tanh, dropout, out) as BERT's pooler and classifier."""
    from safetensors.torch import load_file

    names = {"1": f"{prefix}.pooler.dense", "4": "classifier"}
    out = {}
    for key, value in load_file(adapter.folder / HEAD_WEIGHTS).items():
        parts = key.split(".")
        if len(parts) != 4 or parts[0] != "heads" or parts[2] not in names:
            raise _refuse(adapter.folder, f"head weight {key} does not fit a 2-layer classification head")
        out[f"{names[parts[2]]}.{parts[3]}"] = value
    return out
