"""Checks that run before any model is loaded, so a typo fails in a second, not after a long load. A multi-task
recipe is checked task by task, as each task's own single-task recipe."""

from __future__ import annotations

from .. import data as data_mod
from ..adapters import METHODS, check_targets
from ..errors import ModelError, RecipeError
from ..files import check_safetensors
from ..heads import HEADS
from ..model.assemble import uses_native
from ..model.backbone import load_config, resolve_path
from ..runs import RunWriter
from . import multitask
from .checkpoint import check_output_dir


def preflight(recipe, resume: str | None = None, output: bool = True) -> None:
    """`output=False`: the recipe's output_dir is not where it trains (a search's trials each get their own)."""
    resolve_path(recipe.backbone)
    method = METHODS[recipe.adapter.method]
    if method.trains_base and recipe.backbone.quantization != "none":
        raise RecipeError(
            f"adapter.method: {method.name} fine-tuning needs backbone.quantization: none (quantized weights cannot train)"
        )
    if recipe.tasks:
        multitask.check_method(recipe.adapter)
        subs = [multitask.task_recipe(recipe, spec) for spec in recipe.tasks]
    else:
        subs = [recipe]
    for sub in subs:
        check_data_files(sub, HEADS[sub.task.type])
    if output:
        RunWriter(recipe.training.output_dir, recipe).check_writable()
    for sub in subs:
        head = HEADS[sub.task.type]
        check_model(sub, head)
        check_labels(sub, head)
        if not recipe.tasks:  # a multi-task run selects on TASK/METRIC or a mean: checked at the first evaluation
            check_early_stopping(sub, head)
    if output:
        check_output_dir(recipe.training, resume)


def check_data_files(recipe, head) -> None:
    """Every split can be read (file, folder or Hub data set) and has the columns the head needs."""
    if not recipe.data.train:
        raise RecipeError("data.train: no training file given")
    data_mod.raw_splits(recipe, head, check=True, need_label=head.has_labels)


def check_model(recipe, head) -> None:
    """The model config reads, the architecture has the head's transformers class, and named target modules exist
    (checked on an empty `meta` model: no weights are loaded). GGUF backbones are converted on first load, so only
    their file is checked here."""
    if recipe.backbone.gguf_file:
        return
    from transformers import AutoModel

    config = load_config(recipe.backbone)
    auto_class = head.auto() if uses_native(head, recipe.task, config) else AutoModel
    if type(config) not in auto_class._model_mapping:
        hint = (
            "; a custom head (task.pooling: mean) runs on any AutoModel backbone"
            if head.module is not None and auto_class is not AutoModel
            else ""
        )
        raise ModelError(
            f"backbone.path: {recipe.backbone.path} ({config.model_type}) has no {auto_class.__name__} "
            f"implementation in transformers{hint}"
        )
    targets = recipe.adapter.settings().get("target_modules")
    if isinstance(targets, list):
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = auto_class.from_config(config, trust_remote_code=recipe.backbone.trust_remote_code)
        check_targets(model, targets)
    folder = resolve_path(recipe.backbone)
    check_weights(folder)
    check_tokenizer(folder)
    positions = getattr(config, "max_position_embeddings", None)
    factor = (recipe.backbone.rope_scaling or {}).get("factor", 1)
    if (
        positions and recipe.data.max_length > positions * factor
    ):  # found here, not as an index error in the first batch
        longer = "; backbone.rope_scaling trains longer sequences" if head.lm_training else ""
        raise RecipeError(
            f"data.max_length: {recipe.data.max_length} is more than the {int(positions * factor)} positions "
            f"{recipe.backbone.path} has (max_position_embeddings{' x rope_scaling.factor' if factor != 1 else ''}){longer}"
        )


# The weights transformers loads with use_safetensors=True: a stray small *.safetensors beside pickled weights must
# not pass, or the pickle would be read after all.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def check_weights(folder) -> None:
    if not any((folder / n).is_file() for n in WEIGHT_FILES):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ModelError(
            f"backbone.path: {folder} has no model.safetensors weights{f' (found {pickles[:3]})' if pickles else ''}; "
            f"adapterkit loads weights only through safetensors (pickled checkpoints can run code); convert it once, "
            f"where you trust the file: AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR)"
        )
    single = folder / "model.safetensors"
    if single.is_file():  # a truncated download fails here in a second, not inside the loader
        check_safetensors(single, "backbone")


def check_tokenizer(folder) -> None:
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelError(
            f"backbone.path: {folder} has no tokenizer files (one of {list(TOKENIZER_FILES)}); without them every "
            f"word would become an unknown token: copy the tokenizer of the model into the folder"
        )


def check_labels(recipe, head) -> None:
    """Every label in the validation and test splits is known (from task.labels or the training split)."""
    if not head.named_labels:
        return
    cfg = recipe.data
    if cfg.allow_unseen_labels and not recipe.task.labels:  # they join the label map (data/prepare.py label_map)
        return
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
        unknown = [
            l
            for l in data_mod.label_names(data_mod.column(ds, cfg.label_column), head.label_kind)
            if l not in set(known)
        ]
        if unknown:
            hint = (
                "" if recipe.task.labels else " (data.allow_unseen_labels: true adds them to the label map, untrained)"
            )
            raise RecipeError(
                f"data.{split}: label(s) {unknown[:5]} in {where} are not among {source} {list(known)[:20]}{hint}"
            )


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
            raise RecipeError(
                f"training.early_stopping.metric: {metric!r} is not among the validation metrics of this "
                f"{recipe.task.type} run ({', '.join(known)}); list it in task.generation_metrics"
            )
        return
    if not set(head.metrics) <= {"accuracy", "f1"}:  # only these local modules report a key equal to their name
        return
    if not recipe.data.validation and "metric" in recipe.training.early_stopping.model_fields_set:
        raise RecipeError(f"training.early_stopping.metric: {metric!r} needs a validation file (data.validation)")
    known = ["loss", *head.metrics]
    if metric not in known:
        raise RecipeError(
            f"training.early_stopping.metric: {metric!r} is not reported by the {recipe.task.type} head; expected one of {known}"
        )
