"""A custom task head in a few lines: a two-layer MLP classifier on mean-pooled hidden states.

Use it from a recipe (run from the repository root, or install this module):

    task:
      plugin: examples.custom_head   # imported like `import examples.custom_head` (user code you opted into)
      type: mlp_classifier
      mlp_hidden: 128                # this head's own setting, validated by MlpSettings

adapterkit builds AutoModel(backbone) + this module, trains the module fully (and the adapter), saves it in
head.safetensors and reloads it with `adapterkit eval/predict` (the run's recipe names the plugin too).
Custom heads have no plain-transformers class, so `adapterkit export --format merged` does not apply to them.
"""
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from adapterkit.heads import Head, pool, register_head


class MlpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mlp_hidden: int = Field(128, gt=0, description="Width of the MLP's hidden layer.")


class MlpClassifier(nn.Module):
    """(hidden_states, attention_mask) -> logits, the contract of a custom head module."""

    def __init__(self, hidden: int, task, labels):
        super().__init__()
        width = MlpSettings.model_validate(task.model_extra or {}).mlp_hidden
        self.pooling = "mean" if task.pooling == "auto" else task.pooling
        self.mlp = nn.Sequential(nn.Dropout(task.dropout or 0.1), nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, len(labels)))

    def forward(self, hidden, mask):
        return self.mlp(pool(hidden, mask, self.pooling))


register_head(Head(
    name="mlp_classifier",
    metrics=("accuracy", "f1"),                      # local evaluate modules (adapterkit/metrics) or Hub names
    module=MlpClassifier,                            # (hidden_size, task_cfg, labels) -> nn.Module
    loss=lambda logits, labels: nn.functional.cross_entropy(logits, labels),
    settings=MlpSettings,                            # validates the head's own `task:` keys
))
