"""Load an adapterkit merged export with plain transformers (this process never imports adapterkit) and score it
on a TSV/CSV split: in the exported dtype and re-quantized to LLM.int8 on load.

    python benchmarks/load_export_plain.py EXPORT_DIR ../shared/data/sst2/validation.tsv [--text-column sentence]

Prints one JSON object: accuracy per load mode, prediction agreement between them, load times.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig


def read(path, text_column, label_column):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
    return [r[text_column] for r in rows], [r[label_column] for r in rows]


@torch.no_grad()
def predict(model, tok, texts, max_length, bs=64):
    out = []
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        out.append(model(**enc).logits.argmax(-1))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("data")
    ap.add_argument("--text-column", default="sentence")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--max-length", type=int, default=66)
    a = ap.parse_args()
    texts, gold = read(a.data, a.text_column, a.label_column)
    tok = AutoTokenizer.from_pretrained(a.export_dir)
    result, preds = {"export": a.export_dir, "examples": len(texts)}, {}
    # Modules kept in float when quantizing: the classifier head and BERT's pooler (as adapterkit trains them).
    int8 = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["classifier", "score", "lm_head", r".*\.pooler"])
    for mode, kwargs in (("as_exported", {}), ("int8_on_load", {"quantization_config": int8, "device_map": {"": "cpu"}})):
        t0 = time.perf_counter()
        model = AutoModelForSequenceClassification.from_pretrained(a.export_dir, **kwargs).eval()
        load_s = time.perf_counter() - t0
        id2label = model.config.id2label
        p = predict(model, tok, texts, a.max_length)
        preds[mode] = p
        acc = sum(id2label[int(x)] == g for x, g in zip(p, gold)) / len(gold)
        result[mode] = {"accuracy": round(acc, 6), "load_s": round(load_s, 2), "dtype": str(next(model.parameters()).dtype)}
    result["agreement_as_exported_vs_int8"] = round(float((preds["as_exported"] == preds["int8_on_load"]).float().mean()), 6)
    result["adapterkit_imported"] = "adapterkit" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
