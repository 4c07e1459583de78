"""ROUGE-1/2/L F1 with rouge-score, the best-matching reference per example, averaged (adapterkit's offline metric)."""
import evaluate

from adapterkit.metrics.generated import text_metric_info

_DESCRIPTION = "ROUGE-1, ROUGE-2 and ROUGE-L F1 (0-1), per example against its best reference, averaged."
_KWARGS = "predictions (list of str), references (list of list of str). Returns {'rouge1', 'rouge2', 'rougeL'}."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Rouge(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS)

    def _compute(self, predictions, references):
        from rouge_score import rouge_scorer

        keys = ("rouge1", "rouge2", "rougeL")
        scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
        totals = dict.fromkeys(keys, 0.0)
        for pred, refs in zip(predictions, references):
            scores = [scorer.score(ref, pred) for ref in refs]
            for k in keys:
                totals[k] += max(s[k].fmeasure for s in scores)
        n = max(len(predictions), 1)
        return {k: totals[k] / n for k in keys}
