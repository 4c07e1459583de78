"""(d) Load an adapterkit export with plain transformers (no adapterkit, no PEFT at load time).

    adapterkit export runs/demo --out exports/demo
    python examples/pipelines/load_export.py exports/demo "This lamp is beautifully made."
"""
import sys


def main(export_dir, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(export_dir)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    return classify(list(texts))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: load_export.py EXPORT_DIR TEXT [TEXT ...]")
    for row in main(sys.argv[1], sys.argv[2:]):
        print(row)
