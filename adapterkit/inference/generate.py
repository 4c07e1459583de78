"""Generation with a trained decoder run: prompts completed with the run's chat or prompt template."""
from __future__ import annotations

import torch

from ..errors import RecipeError
from ..heads.lm import LabelWordsModel, bos_ids, render_chat, render_prompt, text_ids, use_chat_template
from .run import load_for_eval


@torch.no_grad()
def generate(run_dir, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0, zero_shot: bool = False) -> list[dict]:
    """Complete prompts with a trained causal_lm (or label_words) run. Prompts get the run's chat template (causal_lm)
    or prompt template (label_words) exactly as in training. Greedy unless temperature > 0."""
    run = load_for_eval(run_dir, zero_shot=zero_shot)
    model, tokenizer, recipe = run.model, run.tokenizer, run.recipe
    if recipe.task.type not in ("causal_lm", "label_words"):
        raise RecipeError(f"generate: the run's task.type is {recipe.task.type!r}; generate needs causal_lm or label_words")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm = inner.backbone if isinstance(inner, LabelWordsModel) else inner
    chat = use_chat_template(recipe, tokenizer)
    device = next(lm.parameters()).device
    rows = []
    for prompt in prompts:
        if recipe.task.type == "label_words":
            text = render_prompt(recipe, tokenizer, prompt)
        else:
            text = render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True) if chat else prompt
        ids = torch.tensor([bos_ids(tokenizer) + text_ids(tokenizer, text)], device=device)
        kw = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
        out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kw)
        rows.append({"prompt": prompt, "completion": tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)})
    return rows
