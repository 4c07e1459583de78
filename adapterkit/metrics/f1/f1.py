"""F1 over classes (macro average by default; `average="micro"` or `"binary"` also accepted)."""
import datasets
import evaluate

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), per class then averaged."
_KWARGS = "predictions, references (list of int), average ('macro'|'micro'|'binary'). Returns {'f1': float}."


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro", labels=None):
        classes = sorted(set(references) | set(predictions)) if labels is None else list(labels)
        counts = {c: [0, 0, 0] for c in classes}  # tp, fp, fn
        for p, r in zip(predictions, references):
            if p == r:
                counts.setdefault(p, [0, 0, 0])[0] += 1
            else:
                counts.setdefault(p, [0, 0, 0])[1] += 1
                counts.setdefault(r, [0, 0, 0])[2] += 1
        if average == "micro":
            tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
            return {"f1": float(_f1(tp, fp, fn))}
        if average == "binary":
            return {"f1": float(_f1(*counts.get(1, [0, 0, 0])))}
        return {"f1": float(sum(_f1(*counts[c]) for c in classes) / len(classes)) if classes else 0.0}
