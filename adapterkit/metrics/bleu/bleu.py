"""Corpus BLEU with sacrebleu (13a tokenization), every reference of an example counted (adapterkit's offline metric)."""
import evaluate

from adapterkit.metrics.generated import reference_streams, text_metric_info

_DESCRIPTION = "sacrebleu corpus BLEU, 0-100, over predictions against one or more references per example."
_KWARGS = "predictions (list of str), references (list of list of str). Returns {'bleu': float}."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS)

    def _compute(self, predictions, references):
        import sacrebleu

        return {"bleu": float(sacrebleu.corpus_bleu(predictions, reference_streams(references)).score)}
