"""Where bottleneck adapters go in each model family: torch-free, so the method's recipe checks import no PEFT."""

from __future__ import annotations

PLACEMENTS = ("houlsby", "pfeiffer", "parallel")

# Where each placement goes, per model family: (attention output, FFN output, FFN block, block adds residual itself,
# name suffixes of the layer norms that `train_layer_norms` trains; post-norm families also name the attention output
# block, which with the FFN block is what `adapter_input: post_norm` wraps). Patterns are full-name regexes with one `{idx}`
# group for the layer index.
_ENCODER = dict(
    attn=r"(.*\.)?layer\.{idx}\.attention\.output\.dense",
    ffn=r"(.*\.)?layer\.{idx}\.output\.dense",
    block=r"(.*\.)?layer\.{idx}\.output",
    residual_inside=True,
    norms=["LayerNorm"],
    attn_block=r"(.*\.)?layer\.{idx}\.attention\.output",
)
_DECODER = dict(
    attn=r"(.*\.)?layers\.{idx}\.self_attn\.o_proj",
    ffn=r"(.*\.)?layers\.{idx}\.mlp\.down_proj",
    block=r"(.*\.)?layers\.{idx}\.mlp",
    residual_inside=False,
    norms=["input_layernorm", "post_attention_layernorm"],
)
FAMILIES: dict[str, dict] = {
    **{
        t: _ENCODER
        for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text", "ernie", "xlm-roberta-xl")
    },
    **{
        t: _DECODER
        for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite")
    },
}


def placement_targets(
    placement: str, model_type: str | None, layers: list[int] | None = None, adapter_input: str = "projection"
) -> tuple[str, bool]:
    """(target_modules regex, residual_inside) for a placement on a model type."""
    family = FAMILIES.get(model_type or "")
    if family is None:
        raise ValueError(
            f"bottleneck adapters have no default placement for model type {model_type!r} "
            f"(known: {sorted(FAMILIES)}); give target_modules explicitly"
        )
    idx = r"(\d+)" if not layers else "(" + "|".join(str(int(i)) for i in layers) + ")"
    if adapter_input == "post_norm":
        if "attn_block" not in family:
            raise ValueError(
                f"adapter_input: post_norm needs a post-norm encoder (BERT family); {model_type!r} normalises "
                "before each block"
            )
        keys = {"houlsby": ("attn_block", "block"), "pfeiffer": ("block",)}[placement]
        return "|".join(f"(?:{family[k].format(idx=idx)})" for k in keys), False
    keys = {"houlsby": ("attn", "ffn"), "pfeiffer": ("ffn",), "parallel": ("block",)}[placement]
    pattern = "|".join(f"(?:{family[k].format(idx=idx)})" for k in keys)
    return pattern, family["residual_inside"]
