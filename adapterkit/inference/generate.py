"""Generation with a trained decoder run: prompts completed with the run's chat or prompt template, in batches."""
from __future__ import annotations

import json
from pathlib import Path

from ..data.readers import jsonl_rows, read_text_file
from ..errors import DataError, RecipeError
from ..files import atomic_write_text, check_out_file
from ..heads import HEADS, task_settings
from ..heads.lm import GenerationSettings, bos_ids, render_chat, render_prompt, text_ids, use_chat_template
from ..model.generation import generate_batch
from .run import load_for_eval


def prompt_ids(recipe, tokenizer, prompt: str) -> list[int]:
    """A prompt as training saw its prompts: the label-word template, or the chat template's user turn."""
    if recipe.task.type == "label_words":
        text = render_prompt(recipe, tokenizer, prompt)
    else:
        text = render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True) if use_chat_template(recipe, tokenizer) else prompt
    return bos_ids(tokenizer) + text_ids(tokenizer, text)


def read_prompts(path: Path, column: str) -> list[dict]:
    """JSON Lines rows, each with a string `column` (the recipe's data.prompt_column)."""
    rows = []
    for n, row in jsonl_rows(Path(path), "--file"):
        if not isinstance(row.get(column), str):
            raise DataError(f"--file: {path} line {n} has no string {column!r} (the run's data.prompt_column)")
        rows.append(row)
    if not rows:
        raise DataError(f"--file: {path} has no rows")
    return rows


def generate(run_dir, prompts: list[str] | None = None, max_new_tokens: int | None = None, temperature: float = 0.0,
             zero_shot: bool = False, file: Path | None = None, out: Path | None = None, batch_size: int | None = None) -> list[dict]:
    """Complete prompts (strings, or the rows of a JSON Lines file) with a causal_lm or label_words run, batched;
    greedy unless temperature > 0. File rows keep their fields and gain `completion`; `out` writes them as JSON Lines."""
    if out is not None:
        check_out_file(Path(out), "--out", DataError)
    if file:
        read_text_file(Path(file), "--file")  # missing or not UTF-8: said before the model loads (rows parsed once the prompt column is known)
    run = load_for_eval(run_dir, zero_shot=zero_shot)
    model, tokenizer, recipe = run.model, run.tokenizer, run.recipe
    if not HEADS[recipe.task.type].generates:
        able = [n for n, h in HEADS.items() if h.generates]
        raise RecipeError(f"generate: the run's task.type is {recipe.task.type!r}; generate needs {' or '.join(able)}")
    own = getattr(task_settings(recipe.task), "generation", None) or GenerationSettings()
    settings = own.model_copy(update={k: v for k, v in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)) if v})
    if temperature > 0:
        settings = settings.model_copy(update=dict(do_sample=True, temperature=temperature))
    column = recipe.data.prompt_column
    rows = read_prompts(Path(file), column) if file else [{"prompt": p} for p in prompts or []]
    key = column if file else "prompt"
    completions = generate_batch(model, tokenizer, [prompt_ids(recipe, tokenizer, r[key]) for r in rows], settings)
    result = [dict(r, completion=c) for r, c in zip(rows, completions)]
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), "".join(json.dumps(r) + "\n" for r in result))
    return result
