"""What the generated-text metric modules (bleu, chrf, rouge, exact_match) share: predictions are strings,
references a list of strings per example (every reference counts)."""

from __future__ import annotations


def text_metric_info(description: str, kwargs: str):
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=kwargs,
        features=datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
        ),
    )


def reference_streams(references: list[list[str]]) -> list[list]:
    """Per-example reference lists -> sacrebleu's reference streams (shorter lists padded with None)."""
    width = max(len(r) for r in references)
    return [[r[i] if i < len(r) else None for r in references] for i in range(width)]
