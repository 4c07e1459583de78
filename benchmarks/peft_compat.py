"""Check the bottleneck PEFT registration against other PEFT versions than the installed one.

    pip install --no-deps --target /tmp/peft-0.18.0 peft==0.18.0     # once per version
    PYTHONPATH=/tmp/peft-0.18.0 python benchmarks/peft_compat.py

Builds houlsby/pfeiffer/parallel adapters on tiny random BERT and Llama classifiers with plain peft.get_peft_model,
saves them and reloads them with PeftModel.from_pretrained; prints whether every reload gives identical logits.
"""
import tempfile, torch, peft
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification
from adapterkit.adapters.bottleneck import BottleneckConfig
from peft import get_peft_model, PeftModel
res = []
for fam in ("bert", "llama"):
    for pl in ("houlsby", "pfeiffer", "parallel"):
        mk = (lambda: BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))) if fam == "bert" else (lambda: LlamaForSequenceClassification(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, pad_token_id=0)))
        torch.manual_seed(0); m = get_peft_model(mk(), BottleneckConfig(placement=pl, bottleneck_size=4, init_weights=False, task_type="SEQ_CLS")).eval()
        x = torch.randint(1, 50, (2, 6)); out = m(input_ids=x).logits
        d = tempfile.mkdtemp(); m.save_pretrained(d)
        torch.manual_seed(0); l = PeftModel.from_pretrained(mk(), d).eval()
        res.append(torch.equal(l(input_ids=x).logits, out))
print("peft", peft.__version__, "bottleneck save/load identical:", all(res), len(res))
raise SystemExit(0 if all(res) else 1)
