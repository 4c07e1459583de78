"""Entity-level precision, recall and F1 for IOB-tagged sequences, via the seqeval package (offline copy of the Hub's
`seqeval` metric, which evaluate.load would fetch from the network)."""
import datasets
import evaluate

_DESCRIPTION = "Entity-level P/R/F1 (CoNLL-style: an entity counts only when its type and span both match), overall and per type."
_KWARGS = ("predictions, references (list of lists of tag strings), mode (None | 'strict'), scheme (None | 'IOB2' | ...). "
           "Returns precision, recall, f1 (micro over entities), accuracy (per token), macro_f1, per_type "
           "{TYPE: {precision, recall, f1, number}} and report (the seqeval classification report text).")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, mode=None, scheme=None):
        from seqeval import scheme as schemes
        from seqeval.metrics import accuracy_score, classification_report

        kw = dict(mode=mode, scheme=getattr(schemes, scheme) if scheme else None, zero_division=0)
        rep = classification_report(references, predictions, output_dict=True, **kw)
        text = classification_report(references, predictions, digits=4, **kw)
        per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                        "number": int(v["support"])} for k, v in rep.items() if not k.endswith(" avg")}
        micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        return {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"]),
                "accuracy": float(accuracy_score(references, predictions)),
                "macro_f1": float(rep["macro avg"]["f1-score"]) if "macro avg" in rep else 0.0,
                "per_type": per_type, "report": text}
