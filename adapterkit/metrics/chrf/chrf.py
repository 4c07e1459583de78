"""Corpus chrF with sacrebleu, every reference of an example counted (adapterkit's offline metric)."""
import evaluate

from adapterkit.metrics.generated import reference_streams, text_metric_info

_DESCRIPTION = "sacrebleu corpus chrF, 0-100, over predictions against one or more references per example."
_KWARGS = "predictions (list of str), references (list of list of str). Returns {'chrf': float}."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Chrf(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS)

    def _compute(self, predictions, references):
        import sacrebleu

        return {"chrf": float(sacrebleu.corpus_chrf(predictions, reference_streams(references)).score)}
