"""Generation with a trained decoder run: prompts completed with the run's chat or prompt template, in batches.

A prompt file is read as a stream and, with `--out`, completions are written as each batch finishes to
`OUT.partial` (its settings beside it in `OUT.partial.json`); the file becomes OUT when the last prompt is done. A
run stopped by a signal (or killed) continues there with the same command, so memory does not grow with the file and
no finished completion is generated twice."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..data.readers import json_object, read_text_file
from ..errors import DataError, Interrupted, RecipeError
from ..files import atomic_write_text, check_out_file
from ..heads import HEADS, task_settings
from ..heads.lm import GenerationSettings, bos_ids, render_chat, render_prompt, text_ids, use_chat_template
from ..model import LoadedRun, load_run_recipe, require_finished
from ..model.generation import generate_batch
from ..progress import progress
from ..signals import signal_number
from .run import load_for_eval

MAX_PROMPT_LINE = 1 << 20  # bytes per JSON Lines row: a prompt longer than this is no prompt (and would be read whole)


def prompt_ids(recipe, tokenizer, prompt: str) -> list[int]:
    """A prompt as training saw its prompts: the label-word template, or the chat template's user turn."""
    if recipe.task.type == "label_words":
        text = render_prompt(recipe, tokenizer, prompt)
    else:
        text = (
            render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True)
            if use_chat_template(recipe.data, tokenizer)
            else prompt
        )
    return bos_ids(tokenizer) + text_ids(tokenizer, text)


def chat_ids(recipe, tokenizer, messages: list[dict]) -> list[int]:
    """A conversation (OpenAI-style `messages`) as training saw its chats, ready for the assistant's turn; one user
    message is a prompt, as `adapterkit generate` reads it."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return prompt_ids(recipe, tokenizer, messages[0]["content"])
    return bos_ids(tokenizer) + text_ids(
        tokenizer, render_chat(tokenizer, messages, True, use_chat_template(recipe.data, tokenizer))
    )


def prompt_rows(path: Path, column: str) -> Iterator[dict]:
    """JSON Lines rows, each with a string `column` (the recipe's data.prompt_column), read one line at a time."""
    path = Path(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(iter(lambda: f.readline(MAX_PROMPT_LINE + 1), b""), 1):
            if len(raw) > MAX_PROMPT_LINE:
                raise DataError(f"--file: {path} line {n} is over {MAX_PROMPT_LINE} bytes; one prompt per line")
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff" if n == 1 else "")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"--file: {path} line {n} is not UTF-8 text ({e.reason}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            row = json_object(line, path, n, "--file")
            if not isinstance(row.get(column), str):
                raise DataError(f"--file: {path} line {n} has no string {column!r} (the run's data.prompt_column)")
            yield row


def check_prompts(run_dir, path: Path) -> int:
    """The prompt file's rows, every line checked against the run's data.prompt_column before the model loads."""
    require_finished(Path(run_dir))
    return count_prompts(path, load_run_recipe(run_dir).data.prompt_column)


def count_prompts(path: Path, column: str) -> int:
    """Every row checked, none kept: a bad line is said before the model loads."""
    n = sum(1 for _ in prompt_rows(path, column))
    if not n:
        raise DataError(f"--file: {path} has no rows")
    return n


@dataclass(frozen=True)
class Written:
    """What `generate_file` did: completions in `out`, of which `resumed` were kept from an interrupted run."""

    out: Path
    rows: int
    resumed: int


def _load(run_dir, max_new_tokens, temperature, zero_shot, batch_size) -> tuple[LoadedRun, GenerationSettings]:
    run = load_for_eval(run_dir, zero_shot=zero_shot)
    return run, generation_settings(run, max_new_tokens, temperature, batch_size)


def generation_settings(run: LoadedRun, max_new_tokens=None, temperature=0.0, batch_size=None) -> GenerationSettings:
    """The run's own task.generation settings with the command's overrides; refuses a run that does not generate."""
    if not HEADS[run.recipe.task.type].generates:
        able = [n for n, h in HEADS.items() if h.generates]
        raise RecipeError(
            f"generate: the run's task.type is {run.recipe.task.type!r}; generate needs {' or '.join(able)}"
        )
    own = getattr(task_settings(run.recipe.task), "generation", None) or GenerationSettings()
    settings = own.model_copy(
        update={k: v for k, v in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)) if v}
    )
    if temperature > 0:
        settings = settings.model_copy(update=dict(do_sample=True, temperature=temperature))
    return settings


def generate_loaded(run: LoadedRun, prompts: list[str], settings: GenerationSettings) -> list[dict]:
    """Completions of prompts by a run already loaded (alone, or on a shared base: inference/pool.py)."""
    return [r for batch in _complete(run, settings, ({"prompt": p} for p in prompts), "prompt") for r in batch]


def _complete(run: LoadedRun, settings: GenerationSettings, rows: Iterable[dict], key: str) -> Iterator[list[dict]]:
    """Rows with their `completion`, four batches at a time (a bounded number of prompts tokenized at once; with
    continuous batching, a finished row's place goes to a prompt of the same group)."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 4 * settings.batch_size:
            yield _batch(run, settings, batch, key)
            batch = []
    if batch:
        yield _batch(run, settings, batch, key)


def _batch(run: LoadedRun, settings: GenerationSettings, rows: list[dict], key: str) -> list[dict]:
    ids = [prompt_ids(run.recipe, run.tokenizer, r[key]) for r in rows]
    return [dict(r, completion=c) for r, c in zip(rows, generate_batch(run.model, run.tokenizer, ids, settings))]


def generate(
    run_dir,
    prompts: list[str] | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    zero_shot: bool = False,
    file: Path | None = None,
    out: Path | None = None,
    batch_size: int | None = None,
) -> list[dict]:
    """Complete prompts (strings, or the rows of a JSON Lines file) with a causal_lm or label_words run, batched;
    greedy unless temperature > 0. File rows keep their fields and gain `completion`; `out` writes them as JSON Lines
    (for a large file, `generate_file` streams to `out` instead of holding every row)."""
    if out is not None:
        check_out_file(Path(out), "--out", DataError)
    if file:
        read_text_file(Path(file), "--file")  # missing: the usual line
        check_prompts(run_dir, Path(file))
    run, settings = _load(run_dir, max_new_tokens, temperature, zero_shot, batch_size)
    column = run.recipe.data.prompt_column
    rows = prompt_rows(Path(file), column) if file else ({"prompt": p} for p in prompts or [])
    result = [r for batch in _complete(run, settings, rows, column if file else "prompt") for r in batch]
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), "".join(json.dumps(r) + "\n" for r in result))
    return result


def generate_file(
    run_dir,
    file: Path,
    out: Path,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    zero_shot: bool = False,
    batch_size: int | None = None,
) -> Written:
    """Complete every row of a JSON Lines file into `out`, written as it goes and continued after an interruption."""
    file, out = Path(file), Path(out)
    check_out_file(out, "--out", DataError)
    if not file.is_file():
        raise DataError(f"--file: {file} not found")
    partial, meta = out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")
    total = check_prompts(run_dir, file)
    run, settings = _load(run_dir, max_new_tokens, temperature, zero_shot, batch_size)
    column = run.recipe.data.prompt_column
    started = dict(
        run=str(Path(run_dir).resolve()), file=str(file.resolve()), zero_shot=zero_shot, settings=settings.model_dump()
    )
    done = _resume_point(partial, meta, started, file, column)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not done:
        atomic_write_text(meta, json.dumps(started, indent=1))
    rows = prompt_rows(file, column)
    for _ in range(done):
        next(rows)
    written = done
    try:
        with open(partial, "a", encoding="utf-8") as f:
            bar = progress(
                total=total,
                initial=done,
                desc="generating",
                unit="prompt",
                disable=total - done < 2 * settings.batch_size,
            )
            for batch in _complete(run, settings, rows, column):
                f.write("".join(json.dumps(r) + "\n" for r in batch))
                f.flush()
                os.fsync(f.fileno())  # a completion on disk is never generated again
                written += len(batch)
                bar.update(len(batch))
            bar.close()
    except KeyboardInterrupt as e:
        signum = signal_number(e)
        raise Interrupted(
            f"generate: interrupted by {signal.Signals(signum).name}; {written} of {total} completions kept in {partial}; run the "
            f"same command again to continue",
            signum,
        ) from None
    os.replace(partial, out)
    meta.unlink(missing_ok=True)
    return Written(out, total, done)


def _resume_point(partial: Path, meta: Path, started: dict, file: Path, column: str) -> int:
    """Rows an interrupted run already completed (0 when there is none); a partial file from other settings or
    other prompts is refused, not overwritten."""
    if not partial.exists():
        return 0
    try:
        before = json.loads(meta.read_text())
    except (OSError, ValueError):
        before = None
    if before != started:
        differ = sorted(k for k in started if not isinstance(before, dict) or before.get(k) != started[k])
        raise DataError(
            f"--out: {partial} holds completions of an interrupted generate with other settings "
            f"({', '.join(differ) or 'its settings file is missing'}); rerun with those or remove it"
        )
    data = partial.read_bytes()
    keep = data.rfind(b"\n") + 1  # a line cut off by a kill is dropped and generated again
    if keep < len(data):
        with open(partial, "r+b") as f:
            f.truncate(keep)
    n = 0
    for n, (old, new) in enumerate(zip(data[:keep].split(b"\n")[:-1], prompt_rows(file, column)), 1):
        if json.loads(old).get(column) != new[column]:
            raise DataError(
                f"--out: {partial} row {n} completes another prompt than row {n} of {file}; the prompt "
                f"file changed since the interrupted run: remove {partial} to start over"
            )
    return n
