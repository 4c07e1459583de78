"""`--format gguf`: a merged Llama-family decoder written as one GGUF file (llama.cpp, Ollama) with the `gguf`
package's writer and tensor-name map, then loaded back with transformers' own GGUF loader and compared with the
merged model: logits on the validation examples, greedy generations, and the tokenizer's ids.

Tokenizer: when the run's base came from a GGUF file its `tokenizer.*` fields are copied as they are (llama.cpp's
pre-tokenizer name included); otherwise they are built from the run's byte-level BPE tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import AdapterkitError
from ..heads import HEADS
from ..inference import verify

TYPES = ("f32", "f16", "q8_0")
# Allowed |GGUF - merged| logit difference relative to the largest |logit|: rounding of the stored weights.
TOLERANCE = {"f32": None, "f16": 1e-2, "q8_0": 5e-2}


class GGUFError(AdapterkitError):
    pass


def check_supported(recipe, gguf_type: str) -> None:
    if gguf_type not in TYPES:
        raise GGUFError(f"--gguf-type: {gguf_type!r}; expected one of {list(TYPES)}")
    if not HEADS[recipe.task.type].lm_training:
        lm = [n for n, h in HEADS.items() if h.lm_training]
        raise GGUFError(
            f"--format gguf: task.type {recipe.task.type!r}; GGUF export is for {' or '.join(lm)} runs of Llama-family decoders"
        )
    if recipe.backbone.rope_scaling:
        raise GGUFError(
            "--format gguf: runs with backbone.rope_scaling are not exported (transformers' GGUF loader cannot check them)"
        )


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """HF's rotate-half q/k layout -> GGUF's interleaved one (llama.cpp's convert_hf_to_gguf permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields_from_gguf(writer, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            sub = field.types[1] if len(field.types) > 1 else None
            writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)


def _tokenizer_fields_from_json(writer, tokenizer) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or not any(p.get("type") == "ByteLevel" for p in _pretokenizers(spec)):
        raise GGUFError(
            "--format gguf: the run's tokenizer is not a byte-level BPE tokenizer (GPT-2 style); "
            "only those are written to GGUF"
        )
    vocab = dict(model["vocab"])
    for t in spec.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {t["id"]: t["special"] for t in spec.get("added_tokens", [])}
    types = [
        gguf.TokenType.CONTROL
        if special.get(i)
        else gguf.TokenType.USER_DEFINED
        if i in special
        else gguf.TokenType.NORMAL
        for i in range(size)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for attr, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("pad_token_id", writer.add_pad_token_id),
        ("unk_token_id", writer.add_unk_token_id),
    ):
        if getattr(tokenizer, attr, None) is not None:
            add(int(getattr(tokenizer, attr)))
    writer.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _pretokenizers(spec: dict) -> list[dict]:
    pre = spec.get("pre_tokenizer") or {}
    return pre.get("pretokenizers", [pre]) if pre else []


def write_gguf(model, tokenizer, path: Path, gguf_type: str, source_gguf: Path | None, name: str) -> dict:
    """Write the merged LlamaForCausalLM `model` to `path`; returns {tensors, by type}."""
    import gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise GGUFError(
            f"--format gguf: model type {cfg.model_type!r}; GGUF export covers Llama-family decoders (llama)"
        )
    n_layers = cfg.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    theta = (
        (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0
    )
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[gguf_type]
    )
    if source_gguf is not None:
        _tokenizer_fields_from_gguf(writer, source_gguf)
    else:
        _tokenizer_fields_from_json(writer, tokenizer)
    counts: dict[str, int] = {}
    state = model.state_dict()
    tied = cfg.tie_word_embeddings or "lm_head.weight" not in state
    for key, tensor in state.items():
        if key == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        new = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise GGUFError(f"--format gguf: no GGUF name for tensor {key!r}")
        data = tensor.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_attention_heads, cfg.num_key_value_heads)
        qtype = gguf.GGMLQuantizationType.F32
        if data.ndim == 2 and gguf_type == "q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
        elif data.ndim == 2 and gguf_type in ("f16", "q8_0"):
            qtype = gguf.GGMLQuantizationType.F16
        if qtype == gguf.GGMLQuantizationType.F16:
            data = data.astype(np.float16)
        elif qtype == gguf.GGMLQuantizationType.Q8_0:
            data = gguf.quants.quantize(data, qtype)
        writer.add_tensor(new, data, raw_dtype=qtype)  # quantized rows arrive as bytes; the writer derives the shape
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors_by_type": counts}


@torch.no_grad()
def verify_gguf(
    folder: Path, file: str, merged, merged_probe, ref, head, tolerance: float, prompts: list, generation
) -> dict:
    """Load the GGUF file back with transformers and compare it with the merged model (its probe pass `merged_probe`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model.generation import generate_batch

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    recipe, labels = ref.recipe, ref.labels
    theirs = verify.run_pass(loaded, ref.probe, head, probe=10**9, labels=labels, task=recipe.task)
    check = verify.logit_check(theirs, merged_probe, tolerance)
    a = generate_batch(merged, ref.tokenizer, prompts, generation)
    b = generate_batch(loaded, ref.tokenizer, prompts, generation)
    gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    texts = [ref.tokenizer.decode(p, skip_special_tokens=False) for p in prompts]
    same_ids = sum(
        gguf_tok(t, add_special_tokens=False)["input_ids"] == ref.tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in texts
    )
    return {
        "logits": check,
        "greedy_identical": sum(x == y for x, y in zip(a, b)),
        "prompts": len(prompts),
        "tokenizer_identical_ids": same_ids,
        "examples": [{"run": x, "gguf": y} for x, y in list(zip(a, b))[:3]],
    }


def lora_tensors(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GGUF name -> (A [r, in], B [out, r]) of every LoRA layer of a PEFT-wrapped LlamaForCausalLM, as llama.cpp
    applies them: B carries LoRA's scale times the rank (the file's alpha is 1, and llama.cpp scales by alpha / rank,
    so any scale and per-layer rank come out right), and q/k rows are permuted like their base weights."""
    import gguf
    from peft.tuners.lora import Linear, LoraLayer

    base = model.get_base_model()
    cfg = base.config
    if cfg.model_type != "llama":
        raise GGUFError(f"--format gguf-lora: model type {cfg.model_type!r}; it covers Llama-family decoders (llama)")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    out = {}
    for path, m in base.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        adapter = m.active_adapters[0]
        if not isinstance(m, Linear) or m.use_dora.get(adapter) or adapter in getattr(m, "lora_variant", {}):
            raise GGUFError(f"--format gguf-lora: {path} is not a plain LoRA linear layer (llama.cpp applies B A only)")
        new = names.get_name(f"{path}.weight", try_suffixes=(".weight",))
        if new is None:
            raise GGUFError(f"--format gguf-lora: no GGUF name for the LoRA layer {path!r}")
        a = m.lora_A[adapter].weight.detach().float().cpu().numpy()
        b = (m.lora_B[adapter].weight.detach().float() * (m.scaling[adapter] * a.shape[0])).cpu().numpy()
        if path.endswith("q_proj"):
            b = _permute(b, cfg.num_attention_heads, cfg.num_attention_heads)
        elif path.endswith("k_proj"):
            b = _permute(b, cfg.num_attention_heads, cfg.num_key_value_heads)
        out[new] = (a, b)
    if not out:
        raise GGUFError("--format gguf-lora: the run has no LoRA layers")
    return out


def write_lora_gguf(tensors: dict, path: Path, gguf_type: str, name: str) -> dict:
    """llama.cpp's LoRA adapter GGUF (general.type adapter, adapter.type lora; `NAME.lora_a` / `NAME.lora_b`)."""
    import gguf

    if gguf_type not in ("f32", "f16"):
        raise GGUFError(f"--gguf-type: {gguf_type!r}; --format gguf-lora writes f32 or f16 LoRA factors")
    dtype, qtype = {
        "f32": (np.float32, gguf.GGMLQuantizationType.F32),
        "f16": (np.float16, gguf.GGMLQuantizationType.F16),
    }[gguf_type]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 1.0)
    for new, (a, b) in tensors.items():
        writer.add_tensor(f"{new}.lora_a", a.astype(dtype), raw_dtype=qtype)
        writer.add_tensor(f"{new}.lora_b", b.astype(dtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"lora_layers": len(tensors), "rank": sorted({a.shape[0] for a, _ in tensors.values()})}


def check_lora_gguf(path: Path, tensors: dict, tolerance: float) -> dict:
    """Read the adapter file back (gguf's reader) and rebuild each layer's update alpha / r * B A as llama.cpp does;
    compare with the run's own update (scale * B A, q/k permuted), relative to its largest entry."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {f: reader.fields[f].contents() for f in ("general.type", "adapter.type", "adapter.lora.alpha")}
    stored = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    worst = 0.0
    for new, (a, b) in tensors.items():
        ga, gb = stored[f"{new}.lora_a"].reshape(a.shape), stored[f"{new}.lora_b"].reshape(b.shape)
        want = b @ a / a.shape[0]
        got = fields["adapter.lora.alpha"] / ga.shape[0] * (gb @ ga)
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)))
    return {"fields": fields, "tensors": len(stored), "relative_diff": worst, "ok": worst <= tolerance}
