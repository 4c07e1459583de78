"""Exact match: share of predictions equal (after stripping surrounding white space) to one of their references."""
import evaluate

from adapterkit.metrics.generated import text_metric_info

_DESCRIPTION = "Exact match, 0-1: a prediction counts when it equals one of its references after strip()."
_KWARGS = "predictions (list of str), references (list of list of str). Returns {'exact_match': float}."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS)

    def _compute(self, predictions, references):
        hits = sum(any(p.strip() == r.strip() for r in refs) for p, refs in zip(predictions, references))
        return {"exact_match": hits / max(len(predictions), 1)}
