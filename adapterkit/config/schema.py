"""The recipe schema: typed sections validated by pydantic; nothing in a recipe is executed.

The schema imports no registry. Method settings, head types and their own keys are checked against the
registries handed in through pydantic's validation context (`Registries`, see config/load.py); without them
only the structure is checked."""

from __future__ import annotations

import types
import typing
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError


def key_error(key: str, msg: str) -> PydanticCustomError:
    """An error about one key of a section, raised from the section's own validator: reported as `section.key: msg`."""
    return PydanticCustomError("recipe_key", "{msg}", {"key": key, "msg": msg})


# The learning rate and warmup of methods that name none of their own (Method.default_lr, Method.default_warmup).
DEFAULT_LR = 5e-4
DEFAULT_WARMUP = 0.06


@dataclass(frozen=True)
class Registries:
    """What recipe validation looks names up in: adapter methods (`adapter.method`) and task heads (`task.type`).
    Each entry needs `.settings` (a pydantic model of its own keys, or None for heads without any); heads also
    `.label_kind`."""

    methods: Mapping[str, Any]
    heads: Mapping[str, Any]


def registries(info: ValidationInfo) -> Registries | None:
    ctx = info.context
    return ctx if isinstance(ctx, Registries) else None


def _union_args(ann) -> tuple:
    """The members of a Union/Optional annotation (Annotated metadata dropped); (ann,) for any other."""
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(ann) for a in _union_args(arg))
    return (ann,)


def _number_kind(ann) -> str | None:
    """'an integer' / 'a number' for int and float fields (also inside Optional/Union); None when a bool is allowed."""
    args = _union_args(ann)
    if bool in args or Any in args:
        return None  # e.g. lora's init_lora_weights: bool | str
    return "an integer" if int in args else "a number" if float in args else None


def _model_in(ann):
    return next((a for a in _union_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)


def value_problem(ann, value) -> tuple[str, str] | None:
    """(path inside `value`, message) for the first part of `value` that pydantic's lax mode would wrongly take for an
    int/float of annotation `ann`: a boolean (true -> 1: `batch_size: true` trained with batch size 1, `layers: [true]`
    adapted layer 1) or a string it reads as nan/inf. Lists, mappings and nested settings models are walked, so the
    path names the item (`0` in `layers.0`); "" is the value itself."""
    kind = _number_kind(ann)
    if kind and isinstance(value, bool):
        return "", f"expected {kind}, not the boolean {str(value).lower()}"
    if kind and isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return "", f"{value} is not a finite number"
    for member in _union_args(ann):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if isinstance(value, list) and origin in (list, tuple, set, frozenset) and args:
            items = [(str(i), args[0], v) for i, v in enumerate(value)]
        elif isinstance(value, dict) and origin is dict and len(args) == 2:
            items = [(str(k), args[1], v) for k, v in value.items()]
        elif isinstance(value, dict) and isinstance(member, type) and issubclass(member, BaseModel):
            found = number_problem(member, value)
            return found
        else:
            continue
        for name, item_ann, v in items:
            found = value_problem(item_ann, v)
            if found:
                return f"{name}.{found[0]}" if found[0] else name, found[1]
        return None
    return None


def number_problem(model: type[BaseModel], values: dict) -> tuple[str, str] | None:
    """(key, message) for the first value of `values` that pydantic's lax mode would wrongly take for an int/float
    key of `model`, at any depth (see value_problem). Used for method and head settings, which are not Sections."""
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        found = value_problem(field.annotation, value)
        if found:
            return (f"{key}.{found[0]}" if found[0] else key), found[1]
    return None


class Section(BaseModel):
    # allow_inf_nan: nan/inf would slip through bounds such as `gt=0` (inf > 0) and poison training.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info: ValidationInfo):
        # pydantic's lax mode reads true/false as 1/0 for int and float keys, also inside lists (`[true]` -> [1]):
        # refused, naming the key (and the item).
        if info.field_name in cls.model_fields:
            found = value_problem(cls.model_fields[info.field_name].annotation, value)
            if found and found[0]:
                raise key_error(found[0], found[1])
            if found:
                raise ValueError(found[1])
        return value


ROPE_TYPES = ("linear", "dynamic", "yarn", "longrope", "llama3")
SEED_MAX = 2**32 - 1
# Upper bounds on counts: far above any real run, low enough that a typo (an extra zero run, 1e20) is refused with
# one line before anything loads, instead of training without end or allocating without bound. Also used by the
# command-line options that set the same counts (cli.py, tuning/).
MAX_STEPS = 10**9  # optimizer steps, and the evaluate/log/checkpoint intervals counted in them
MAX_EPOCHS = 10**5
MAX_BATCH = 2**16  # examples per batch (training, evaluation, generation), gradient accumulation steps
MAX_TOKENS = 2**20  # tokens per sequence: data.max_length, generated tokens, loss chunks
MAX_EXAMPLES = 10**12  # data.max_train_samples / max_eval_samples
MAX_FOLDS = 100  # cross-validation folds (data.cv_folds, --cv)
MAX_CHECKPOINTS = 1000  # checkpoints kept
MAX_PATIENCE = 10**6  # evaluations without improvement
MAX_WIDTH = 2**16  # adapter ranks and widths, virtual tokens, beams: each allocates weights or memory per unit


class BackboneConfig(Section):
    path: str = Field(
        description="A Hugging Face Hub id (`org/name`, read from the local cache when HF_HUB_OFFLINE=1 is set), a model folder, "
        "or `package:NAME` for a model shipped in an installed Python package. A local folder of that name wins over the Hub id."
    )
    revision: str | None = Field(
        None, description="Hub id only: branch, tag or commit to load; the run records the commit it resolved to."
    )
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `path` (loaded with transformers' GGUF support)."
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none", description="Load the frozen backbone in full precision, LLM.int8 or 4-bit NF4."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the non-quantized weights."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the checkpoint folder to run. Off unless you trust it."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute activations in backward to save memory. `auto`: on for causal LM heads (long sequences: a SmolLM2 LoRA run's peak memory fell from 5.9 to 3.2 GB for 22% fewer examples/s, benchmarks/results/smollm2_causal_cpu.md), off for the others.",
    )
    rope_scaling: dict[str, Any] | None = Field(
        None,
        description="Position interpolation for a longer context, as transformers' config takes it: "
        "{rope_type: linear | dynamic | yarn, factor: F, ...}; merged into the model's own "
        "rope settings (rope_theta kept), saved with the run and in exports.",
    )
    int8_matmul: Literal["bitsandbytes", "dequantize"] = Field(
        "dequantize",
        description="How frozen int8 weights are multiplied: `dequantize` each layer to the compute dtype (bf16 under bf16 mixed precision) + dense GEMM (same int8 storage; no activation quantization, the input is not kept for backward; several times faster than bitsandbytes' CPU inference matmul), or `bitsandbytes`' own int8 matmul. See adapterkit/model/fast_int8.py.",
    )

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _checkpointing_word(cls, value):
        # One message for the union (bool or "auto") instead of one per member.
        if isinstance(value, str) and value.strip().lower() not in (
            "auto",
            "true",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "1",
            "0",
        ):
            raise ValueError(f"{value!r}; expected true, false or auto")
        return value

    @field_validator("revision")
    @classmethod
    def _revision_name(cls, value):
        # huggingface_hub joins it to cache paths: `../../x` would read outside the cache (hub.py revision_problem)
        from ..hub import revision_problem

        if value is not None and revision_problem(value):
            raise ValueError(
                f"{value!r} {revision_problem(value)}; expected a branch or tag name (main, v1.0, refs/pr/1) or a commit hash"
            )
        return value

    @model_validator(mode="after")
    def _check_rope(self):
        rs = self.rope_scaling
        if rs is None:
            return self
        kind = rs.get("rope_type", rs.get("type"))
        if kind not in ROPE_TYPES:
            raise key_error("rope_scaling", f"rope_type {kind!r}; expected one of {list(ROPE_TYPES)}")
        factor = rs.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise key_error("rope_scaling", "needs a positive number `factor` (context length / trained length)")
        return self


class AdapterConfig(Section):
    """Adapter method and its settings. Settings not used by the chosen method are rejected."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    method: str = Field(
        "lora",
        description="Adapter method: see `adapterkit.adapters.METHODS` (lora, dora, rslora, ia3, prompt_tuning, prefix_tuning, bottleneck, full, peft).",
    )
    plugin: str | None = Field(
        None,
        description="Python module to import before the recipe is validated (e.g. `my_methods`), so it can register its "
        "own method. Runs that module's code like a Python import; recipe strings are never evaluated.",
    )
    init_from: str | None = Field(
        None,
        description="Warm start: a run folder, a PEFT adapter folder or a Hub id whose adapter (and, from a run, "
        "head) this run starts from, with a fresh optimizer and schedule. Label maps must match, "
        "or task.labels names the new set.",
    )

    @model_validator(mode="after")
    def _check_method_settings(self, info: ValidationInfo):
        reg = registries(info)
        if reg is None:
            return self
        if self.method not in reg.methods:
            raise ValueError(f"unknown adapter method {self.method!r}; expected one of {sorted(reg.methods)}")
        problem = number_problem(reg.methods[self.method].settings, self.settings())
        if problem:
            raise key_error(*problem)
        reg.methods[self.method].settings.model_validate(self.settings())
        return self

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskConfig(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    type: str = Field("sequence_classification", description="Task head: see `adapterkit.heads.HEADS`.")
    labels: list[str] | None = Field(
        None, description="Label names in index order; inferred from the training data when omitted."
    )
    pooling: Literal["auto", "cls", "mean", "last"] = Field(
        "auto",
        description="How a sequence is pooled for sequence heads. `auto` uses the backbone family's own transformers head (cls for encoders, last token for decoders), which exports to plain transformers.",
    )
    train_pooler: Literal["full", "adapter"] = Field(
        "full",
        description="A pretrained pooler between the encoder and the classifier (BERT's): `full` trains it with the head, every weight at the head's learning rate; `adapter` keeps its weights frozen and lets the adapter reach it like any backbone layer (PEFT's SEQ_CLS with all-linear targets). On SST-2 LoRA, `adapter` scored lower over seeds 0-2 (benchmarks/results/trainer_sst2.md).",
    )
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Dropout before the head; the backbone's default when omitted."
    )
    plugin: str | None = Field(
        None,
        description="Python module to import before the head is looked up (e.g. `examples.custom_head`), so it can "
        "register its own head. This runs that module's code like a Python import; recipe strings are never evaluated.",
    )

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels):
        # A repeated name would get two indices: one of them could never be predicted, and label maps would not round-trip.
        if labels is not None:
            labels = [unicodedata.normalize("NFC", name) for name in labels]  # as label names are read from data files
            dup = next((name for i, name in enumerate(labels) if name in labels[:i]), None)
            if dup is not None:
                raise ValueError(f"{dup!r} is listed twice; label names must be unique")
        return labels

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, labels):
        # [] is falsy: it was taken as "not given" and the labels silently came from the training data.
        if labels is not None and not labels:
            raise ValueError(
                "an empty list; list the label names, or omit task.labels to take them from the training data"
            )
        return labels

    @model_validator(mode="after")
    def _check_type(self, info: ValidationInfo):
        reg = registries(info)  # plugins named here were imported before validation (config/load.py)
        if reg is None:
            return self
        if self.type not in reg.heads:
            raise ValueError(f"unknown task type {self.type!r}; expected one of {sorted(reg.heads)}")
        own = reg.heads[self.type].settings
        problem = number_problem(own, dict(self.model_extra or {})) if own is not None else None
        if problem:
            raise key_error(*problem)
        try:
            if own is not None:
                own.model_validate(dict(self.model_extra or {}))  # the head's own keys (e.g. threshold for multi_label)
        except ValidationError as e:
            first = e.errors()[0]
            msg = (
                "unknown key for this task type"
                if first["type"] == "extra_forbidden"
                else first["msg"].removeprefix("Value error, ")
            )
            raise ValueError(f"{'.'.join(map(str, first['loc']))}: {msg}") from None
        return self


class DataConfig(Section):
    format: str = Field(
        "auto",
        description="`auto` picks the file format from the extension (a folder: `disk`); `csv`, `tsv`, `jsonl`, `conll`, `parquet`, "
        "`arrow`, `disk`, `hub`, or a format a plugin registered (adapterkit.data.readers.register_reader). `parquet` and `arrow` files and `disk` folders "
        "(`Dataset.save_to_disk`) are read memory-mapped by `datasets`; `hub`: a data set on the Hugging Face Hub named by "
        "`data.name`, with `train`/`validation`/`test` naming its splits.",
    )
    plugin: str | None = Field(
        None,
        description="Python module to import before the data is read (e.g. `my_readers`), so it can register "
        "its own `data.format`. Runs that module's code like a Python import; recipe strings are never evaluated.",
    )
    name: str | None = Field(
        None,
        description="`hub`: the data set id (`org/name`); `disk`: a `DatasetDict.save_to_disk` folder whose splits "
        "`train`/`validation`/`test` name.",
    )
    config: str | None = Field(None, description="`hub`: the data set's configuration (subset), when it has several.")
    train: str | None = Field(None, description="Training file (a split name for `hub`, or for `disk` with `name`).")
    validation: str | None = Field(
        None,
        description="Validation file or split (used for evaluation, early stopping and best-checkpoint selection).",
    )
    test: str | None = Field(None, description="Test file or split, evaluated once at the end.")
    validation_split: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="With no validation source: hold out this share of the training "
        "rows (seeded by training.seed) as the validation split; the run "
        "records which rows went where in data_split.json.",
    )
    cv_folds: int | None = Field(
        None,
        ge=2,
        le=MAX_FOLDS,
        description="Cross-validation (`adapterkit train --cv K` sets it): split the training rows into K "
        "folds, seeded by training.seed and stratified by the label for single-class "
        "heads; fold `data.cv_fold` is the validation split, the rest trains.",
    )
    cv_fold: int | None = Field(
        None, ge=0, description="With data.cv_folds: which fold (0-based) is held out as the validation split."
    )
    cv_group_column: str | None = Field(
        None, description="With data.cv_folds: rows sharing a value of this column stay in one fold."
    )
    text_column: str = Field("text", description="Column with the input text.")
    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column with the label.")
    max_length: int = Field(128, gt=0, le=MAX_TOKENS, description="Truncate inputs to this many tokens.")
    max_train_samples: int | None = Field(
        None, gt=0, le=MAX_EXAMPLES, description="Use only the first N training examples after a seeded shuffle."
    )
    max_eval_samples: int | None = Field(
        None, gt=0, le=MAX_EXAMPLES, description="Use only the first N validation/test examples."
    )
    prompt_column: str = Field("prompt", description="causal_lm: column with the prompt (not trained on).")
    completion_column: str = Field(
        "completion", description="causal_lm: column with the completion (the only trained tokens)."
    )
    references_column: str = Field(
        "references",
        description="causal_lm: column with a list of reference texts for generated-text metrics "
        "(every reference counts); the completion is the reference when the data has no such column.",
    )
    messages_column: str = Field(
        "messages",
        description="causal_lm: column with a chat as a list of {role, content}; when present it is used instead of prompt/completion, and only assistant turns are trained.",
    )
    chat_template: bool | None = Field(
        None,
        description="causal_lm and label_words: wrap prompts/chats in the tokenizer's chat template; when omitted, it is applied if the tokenizer has one.",
    )
    conll_separator: str = Field(
        "auto",
        description="CoNLL column separator: `auto` (tab when the first line has one, else any whitespace), `tab`, `space` or a literal string.",
    )
    conll_columns: int | None = Field(
        None,
        ge=2,
        description="Columns per CoNLL token line; taken from the first token line when omitted. Lines with another count are an error.",
    )
    conll_tag_column: int = Field(
        -1,
        description="Which CoNLL column holds the tag (0-based; negative counts from the end). The token is column 0.",
    )
    subword_labels: Literal["first", "all"] = Field(
        "first",
        description="Token classification: label only a word's first sub-token (`first`) or every sub-token "
        "(`all`, later ones get the I- tag) in training; evaluation always scores first sub-tokens.",
    )
    delimiter: str | None = Field(
        None,
        min_length=1,
        max_length=1,
        description="CSV/TSV field separator, one character: e.g. `;` for the "
        'semicolon-separated CSV some spreadsheets write, `|`, or a tab (`"\\t"`, '
        "double-quoted in YAML). When omitted: `,` for csv, a tab for tsv.",
    )
    allow_unseen_labels: bool = Field(
        False,
        description="Accept validation/test labels that no training row has (an error by default). "
        "They are added to the label map after the training labels (unless task.labels "
        "gives the map), so the head has an output for each, but it was never trained: "
        "those rows are scored, and mostly counted as errors. Labels outside task.labels stay an error.",
    )

    @model_validator(mode="after")
    def _check_sources(self):
        if self.format == "hub" and not self.name:
            raise key_error("name", "`format: hub` needs the data set id in data.name (e.g. stanfordnlp/sst2)")
        if self.name and self.format not in ("hub", "disk"):
            raise key_error("name", "only used with format hub or disk")
        if self.config and self.format != "hub":
            raise key_error("config", "only used with format hub")
        if self.validation_split is not None and self.validation:
            raise key_error("validation_split", "give data.validation or data.validation_split, not both")
        if self.cv_folds is not None:
            if self.validation or self.validation_split:
                raise key_error(
                    "cv_folds",
                    "cross-validation holds out its own validation rows; drop data.validation and data.validation_split",
                )
            if self.cv_fold is None or self.cv_fold >= self.cv_folds:
                raise key_error("cv_fold", f"expected a fold number from 0 to {self.cv_folds - 1}")
        elif self.cv_fold is not None or self.cv_group_column is not None:
            raise key_error(
                "cv_fold" if self.cv_fold is not None else "cv_group_column", "only used with data.cv_folds"
            )
        return self


class EarlyStoppingConfig(Section):
    metric: str = Field(
        "loss", description="Validation metric that selects the best checkpoint (`loss` or a metric name)."
    )
    mode: Literal["auto", "max", "min"] = Field(
        "auto", description="Whether larger is better; `auto`: min for loss-like metrics, max otherwise."
    )
    patience: int | None = Field(
        None,
        ge=1,
        le=MAX_PATIENCE,
        description="Stop after this many evaluations without improvement; never when omitted.",
    )


class TrainingConfig(Section):
    output_dir: str = Field("runs/run", description="Run directory: adapter, head, tokenizer, recipe, metrics, logs.")
    epochs: float = Field(
        1, gt=0, le=MAX_EPOCHS, description="Passes over the training data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, gt=0, le=MAX_STEPS, description="Optimizer steps to run; overrides epochs.")
    batch_size: int = Field(32, gt=0, le=MAX_BATCH, description="Examples per device per forward pass.")
    eval_batch_size: int = Field(64, gt=0, le=MAX_BATCH, description="Examples per device per evaluation pass.")
    gradient_accumulation: int = Field(1, gt=0, le=MAX_BATCH, description="Forward passes per optimizer step.")
    lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate for the adapter; when omitted, the method's default (`adapterkit.adapters.METHODS[name].default_lr`, listed beside each method in the adapter section; the evidence is in docs/methods-and-heads.md).",
    )
    head_lr: float | None = Field(None, gt=0, description="Learning rate of the task head; `lr` when omitted.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Share of steps spent warming the learning rate up from zero; when omitted, the method's default (`Method.default_warmup`, listed beside each method in the adapter section; the evidence is in docs/methods-and-heads.md).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this norm; off when null.")
    seed: int = Field(0, description="Seed for weights, shuffling and dropout (0 to 2**32-1).")
    eval_every: int | None = Field(
        None, gt=0, le=MAX_STEPS, description="Evaluate every N optimizer steps; at each epoch's end when omitted."
    )
    log_every: int = Field(
        10, gt=0, le=MAX_STEPS, description="Write a metrics line to log.jsonl every N optimizer steps."
    )
    trackers: list[str] = Field(
        default_factory=list,
        description="Experiment trackers through Accelerate, by name: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio (or all). Local ones write under RUN_DIR/trackers/; MLflow keeps one SQLite store per run, or per --seeds/--cv series or search in its folder's trackers/ (MLFLOW_TRACKING_URI names another).",
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto",
        description="`auto`: bf16 on GPUs that support it, fp16 on other GPUs; on CPU bf16 where the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX), none elsewhere. `no`: float32 throughout.",
    )
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together to cut padding, the batches in random order; false: random batches, as transformers' Trainer draws them.",
    )
    packing: bool = Field(
        False,
        description="Causal LM only: pack each batch's samples into rows of data.max_length tokens with no padding between them; position ids restart per sample and attention never crosses samples.",
    )
    loss_chunk_tokens: int | None = Field(
        None,
        ge=0,
        le=MAX_TOKENS,
        description="Causal LM only: compute the LM head and cross-entropy this many tokens at a time, never holding the full logits (the same loss). null: 256 target tokens for causal LM heads whose LM head has no adapter (a SmolLM2 run's peak memory fell by more than half, benchmarks/results/smollm2_causal_cpu.md); 0: off, the model's own loss over the full logits.",
    )
    compile: bool = Field(
        False,
        description="Run the model through torch.compile (Accelerate's dynamo_backend=inductor). Off by default: compiling costs minutes up front and recompiles for new batch shapes; measure it with benchmarks/sst2_cpu.py (arm adapterkit_compile).",
    )
    overwrite: bool = Field(
        False,
        description="Allow training into an output_dir that holds a finished run (or an unfinished run's checkpoints, which are then deleted).",
    )
    checkpoint_every: int | None = Field(
        500,
        gt=0,
        le=MAX_STEPS,
        description="Write a resumable checkpoint (adapter, head, optimizer, scheduler, RNG states, data position) to OUTPUT_DIR/checkpoints every N optimizer steps; off when null. Continue with `adapterkit train RECIPE --resume`.",
    )
    keep_checkpoints: int = Field(
        2,
        ge=1,
        le=MAX_CHECKPOINTS,
        description="How many of the latest checkpoints to keep (the one at the best evaluation is kept as well).",
    )
    on_collapse: Literal["recover", "warn", "stop"] = Field(
        "recover",
        description="When evaluations find degenerate predictions (one class for every example or token, entity F1 0 while the gold has entities, accuracy no better than the commonest class; two evaluations in a row in the second half of training, or the final weights): `recover` restores the best weights an evaluation without such findings chose (or the weights training started from), multiplies the learning rate by `collapse_lr_factor`, clears the optimizer's moments and continues, at most `collapse_retries` times, and fails the run (exit 3) when it collapses again after the last recovery or ends collapsed after one (a collapse only the final weights show, with no step left, stays a warning); `warn` in the console, log.jsonl, metrics.json `warnings` and the report; or `stop` the run (status failed, exit 3). Every finding and recovery is logged, in metrics.json and in the report.",
    )
    collapse_retries: int = Field(
        2, ge=1, le=10, description="`on_collapse: recover`: how many recoveries one run may make before it fails."
    )
    collapse_lr_factor: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="`on_collapse: recover`: each recovery multiplies every learning rate (and the rest of the schedule) by this.",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="On a NaN/inf loss or gradient: `stop` with the step number (the last checkpoint stays intact), or `skip` that optimizer step and go on.",
    )

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, seed):
        # numpy's seeding takes 0..2**32-1 only; a seed outside would fail deep inside training, after the model loaded.
        if not 0 <= seed <= SEED_MAX:
            raise ValueError(
                f"{seed} is out of range; expected an integer from 0 to {SEED_MAX} (2**32-1, what numpy and torch seeding accept)"
            )
        return seed

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_not_false(cls, value):
        # YAML 1.1 reads a bare `no`/`off` as false; for this key it can only mean the `no` choice (recipes
        # loaded by adapterkit already keep them strings; this covers dicts built by other YAML readers).
        return "no" if value is False else value


class ExportConfig(Section):
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of the exported weights.")
    tolerance: float = Field(
        1e-4,
        gt=0,
        description="Largest allowed |merged - unmerged| float32 logit difference, relative to the largest |logit| of the verified examples (at least 1), so it fits any vocabulary size.",
    )


def _default_token_columns(task: TaskConfig, data: DataConfig, reg: Registries | None) -> None:
    # Word-level tasks read `tokens`/`tags` (the CoNLL reader's columns) unless the recipe names others.
    head = reg.heads.get(task.type) if reg is not None else None
    if head is not None and head.label_kind == "tokens":
        if "text_column" not in data.model_fields_set:
            data.text_column = "tokens"
        if "label_column" not in data.model_fields_set:
            data.label_column = "tags"


class TaskSpec(Section):
    """One task of a multi-task recipe: its own head and data; backbone, adapter and training are shared."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="Task name: key in metrics.json and the per-task run folder `<output_dir>/<name>`.",
    )
    task: TaskConfig = Field(
        default_factory=TaskConfig, description="Head of this task (same keys as the single-task `task:` section)."
    )
    data: DataConfig = Field(description="Data of this task (same keys as the single-task `data:` section).")
    metric: str | None = Field(
        None,
        description="Headline validation metric of this task, reported per task under `summary` in the joint metrics.json; `loss` when omitted.",
    )
    weight: float = Field(1.0, gt=0, description="Multiplier on this task's loss.")

    @model_validator(mode="after")
    def _token_columns(self, info: ValidationInfo):
        _default_token_columns(self.task, self.data, registries(info))
        return self


class MultitaskConfig(Section):
    adapter: Literal["shared", "per_task"] = Field(
        "shared",
        description="One adapter trained by all tasks, or one PEFT named adapter per task (the backbone stays shared).",
    )
    sampling: Literal["proportional", "temperature", "round_robin"] = Field(
        "proportional",
        description="Which task each step trains on: chance proportional to its number of training batches, proportional to batches^(1/temperature), or tasks in turn.",
    )
    temperature: float = Field(
        2.0, gt=0, description="For sampling: temperature. 1 = proportional; larger flattens towards uniform."
    )


class Recipe(Section):
    backbone: BackboneConfig
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tasks: list[TaskSpec] | None = Field(
        None,
        min_length=2,
        description="Multi-task joint training: several tasks over one backbone (replaces `task` and `data`). See adapterkit/training/multitask.py.",
    )
    multitask: MultitaskConfig = Field(
        default_factory=MultitaskConfig, description="How the tasks of `tasks` share the adapter and are sampled."
    )

    @model_validator(mode="after")
    def _check_tasks(self):
        if self.tasks is None:
            if "multitask" in self.model_fields_set and self.multitask != MultitaskConfig():
                raise ValueError("multitask: only used together with a `tasks:` list")
            return self
        for key in ("task", "data"):
            if key in self.model_fields_set:
                raise ValueError(
                    f"{key}: a multi-task recipe sets {key} inside each entry of `tasks`, not at the top level"
                )
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tasks: task names must be unique; repeated: {dup}")
        return self

    @model_validator(mode="after")
    def _default_lr(self, info: ValidationInfo):
        if self.training.lr is None:
            reg = registries(info)
            method = reg.methods.get(self.adapter.method) if reg is not None else None
            self.training.lr = getattr(method, "default_lr", None) or DEFAULT_LR
        if self.training.warmup_ratio is None:
            reg = registries(info)
            method = reg.methods.get(self.adapter.method) if reg is not None else None
            warmup = getattr(method, "default_warmup", None)
            self.training.warmup_ratio = DEFAULT_WARMUP if warmup is None else warmup
        return self

    @model_validator(mode="after")
    def _token_columns(self, info: ValidationInfo):
        _default_token_columns(self.task, self.data, registries(info))
        return self

    @model_validator(mode="after")
    def _generation_selects(self):
        # A recipe that asks for generated-text metrics is judged by them: the first selects the best weights and
        # heads the run, unless the recipe names its own early_stopping.metric.
        wanted = getattr(self.task, "generation_metrics", None) if self.tasks is None else None
        if wanted and "metric" not in self.training.early_stopping.model_fields_set:
            self.training.early_stopping.metric = wanted[0]
        return self

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["adapter"] = {
            "method": self.adapter.method,
            **{k: getattr(self.adapter, k) for k in ("plugin", "init_from") if getattr(self.adapter, k) is not None},
            **self.adapter.settings(),
        }
        if self.tasks is None:  # single-task recipes stay as they were
            d.pop("tasks", None), d.pop("multitask", None)
        else:  # multi-task: task and data live in each entry of `tasks`
            d.pop("task", None), d.pop("data", None)
        return d
