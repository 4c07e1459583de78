"""Checks that run before any model is loaded, so a typo fails in a second, not after a long load. A multi-task
recipe is checked task by task, as each task's own single-task recipe."""
from __future__ import annotations

from .. import data as data_mod
from ..adapters import METHODS, check_targets
from ..errors import ModelError, RecipeError
from ..heads import HEADS
from ..model.backbone import load_config, resolve_path
from ..model.assemble import uses_native
from ..runs import RunWriter
from . import multitask
from .checkpoint import check_output_dir


def preflight(recipe, resume: str | None = None) -> None:
    resolve_path(recipe.backbone)
    method = METHODS[recipe.adapter.method]
    if method.trains_base and recipe.backbone.quantization != "none":
        raise RecipeError(f"adapter.method: {method.name} fine-tuning needs backbone.quantization: none (quantized weights cannot train)")
    if recipe.tasks:
        multitask.check_method(recipe)
        subs = [multitask.task_recipe(recipe, spec) for spec in recipe.tasks]
    else:
        subs = [recipe]
    for sub in subs:
        check_data_files(sub, HEADS[sub.task.type])
    RunWriter(recipe.training.output_dir, recipe).check_writable()
    for sub in subs:
        head = HEADS[sub.task.type]
        check_model(sub, head)
        check_labels(sub, head)
        if not recipe.tasks:  # a multi-task run selects on TASK/METRIC or a mean: checked at the first evaluation
            check_early_stopping(sub, head)
    check_output_dir(recipe, resume)


def check_data_files(recipe, head) -> None:
    """Every split can be read (file, folder or Hub data set) and has the columns the head needs."""
    if not recipe.data.train:
        raise RecipeError("data.train: no training file given")
    data_mod.raw_splits(recipe, head, check=True, need_label=head.label_kind != "text")


def check_model(recipe, head) -> None:
    """The model config reads, the architecture has the head's transformers class, and named target modules exist
    (checked on an empty `meta` model: no weights are loaded). GGUF backbones are converted on first load, so only
    their file is checked here."""
    if recipe.backbone.gguf_file:
        return
    from transformers import AutoModel

    config = load_config(recipe.backbone)
    auto_class = head.auto_class if uses_native(head, recipe.task, config) else AutoModel
    if type(config) not in auto_class._model_mapping:
        hint = "; a custom head (task.pooling: mean) runs on any AutoModel backbone" if head.module is not None and auto_class is not AutoModel else ""
        raise ModelError(f"backbone.path: {recipe.backbone.path} ({config.model_type}) has no {auto_class.__name__} "
                         f"implementation in transformers{hint}")
    targets = recipe.adapter.settings().get("target_modules")
    if isinstance(targets, list):
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = auto_class.from_config(config, trust_remote_code=recipe.backbone.trust_remote_code)
        check_targets(model, targets)
    folder = resolve_path(recipe.backbone)
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ModelError(f"backbone.path: {folder} has no .safetensors weights{f' (found {pickles[:3]})' if pickles else ''}; "
                         f"adapterkit loads weights only through safetensors (pickled checkpoints can run code)")


def check_labels(recipe, head) -> None:
    """Every label in the validation and test splits is known (from task.labels or the training split)."""
    if head.label_kind not in ("class", "multi", "tokens"):
        return
    cfg = recipe.data
    raw, _ = data_mod.raw_splits(recipe, head, check=False)
    known = recipe.task.labels
    source = "task.labels"
    if known is None:
        train, where = raw["train"]
        known, source = data_mod.label_names(train[cfg.label_column], head.label_kind), f"the labels of {where}"
    splits = ("train", "validation", "test") if recipe.task.labels else ("validation", "test")
    for split in splits:
        if split not in raw or (split == "validation" and not cfg.validation):  # a hold-out has the training labels
            continue
        ds, where = raw[split]
        if cfg.label_column not in ds.column_names:
            continue
        unknown = [l for l in data_mod.label_names(ds[cfg.label_column], head.label_kind) if l not in set(known)]
        if unknown:
            raise RecipeError(f"data.{split}: label(s) {unknown[:5]} in {where} are not among {source} {list(known)[:20]}")


GENERATED_KEYS = {"rouge": "rougeL"}  # generated-text modules reporting under another key (rouge: rouge1/2/L/Lsum)


def check_early_stopping(recipe, head) -> None:
    """The selection metric is one the head reports (heads with their own metric hooks are checked after the first evaluation)."""
    metric = recipe.training.early_stopping.metric
    if metric == "loss" or head.metrics_fn is not None:
        return
    if head.loss_metrics is not None:  # scored by its loss (causal LM), plus any generated-text metrics it asks for
        from ..heads import task_settings

        generated = list(getattr(task_settings(recipe.task), "generation_metrics", None) or [])
        known = ["loss", "perplexity", *(GENERATED_KEYS.get(m, m) for m in generated)]
        if metric not in known and not (metric.startswith("rouge") and "rouge" in generated):
            raise RecipeError(f"training.early_stopping.metric: {metric!r} is not among the validation metrics of this "
                              f"{recipe.task.type} run ({', '.join(known)}); list it in task.generation_metrics")
        return
    if not set(head.metrics) <= {"accuracy", "f1"}:  # only these local modules report a key equal to their name
        return
    if not recipe.data.validation and "metric" in recipe.training.early_stopping.model_fields_set:
        raise RecipeError(f"training.early_stopping.metric: {metric!r} needs a validation file (data.validation)")
    known = ["loss", *head.metrics]
    if metric not in known:
        raise RecipeError(f"training.early_stopping.metric: {metric!r} is not reported by the {recipe.task.type} head; expected one of {known}")
