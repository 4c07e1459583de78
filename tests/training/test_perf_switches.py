"""Correctness of the speed/memory switches (issue #7), all on CPU with tiny models:
packing == unpacked loss, chunked cross-entropy == full cross-entropy (value and gradient), the dequantize int8
path == bitsandbytes within a stated tolerance, gradient checkpointing really drops saved activations."""
from __future__ import annotations

import pytest
import torch

from adapterkit.model import recipe_from_dict
from adapterkit.training.losses import causal_lm_loss, chunked_cross_entropy, shift_labels
from adapterkit.data.packing import PackingCollator, pack_rows
from helpers import save_tokenizer, tiny_recipe


def tiny_llama(attn="sdpa", layers=2, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=211, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, max_position_embeddings=128, pad_token_id=0, tie_word_embeddings=False)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def samples(lengths, seed=0, vocab=211):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        labels = list(ids)
        labels[: n // 3] = [-100] * (n // 3)  # a "prompt" part that is not trained, as chat data has
        out.append({"input_ids": ids, "labels": labels})
    return out


def padded(feats, pad=0):
    width = max(len(f["input_ids"]) for f in feats)
    ids = torch.tensor([f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in feats])
    labels = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in feats])
    mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in feats])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------- packing

def test_pack_rows_first_fit_respects_capacity():
    lengths = [9, 3, 7, 1, 5, 5, 12]
    rows = pack_rows(lengths, 12)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 12 for r in rows)
    assert len(rows) == 4  # 12 | 9+3 | 7+5 | 5+1


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked(attn):
    model = tiny_llama(attn)
    feats = samples([11, 4, 17, 9, 2, 13])
    packed = PackingCollator(pad_token_id=0, row_tokens=24)(feats)
    assert packed["input_ids"].shape[0] < len(feats)  # really packed: fewer rows than samples
    assert packed["input_ids"].numel() < padded(feats)["input_ids"].numel()
    ref = model(**padded(feats)).loss
    got = model(**packed).loss
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    # The same samples packed without restarting positions (so without the block-diagonal mask) give another loss:
    # the test can tell a wrong packing from a right one.
    crossing = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False)
    right = model(**packed)
    assert (crossing.logits - right.logits).abs().max() > 0.05
    assert abs(crossing.loss.item() - ref.item()) > 20 * 1e-6


def test_packed_gradients_equal_unpacked():
    model = tiny_llama().train()
    feats = samples([7, 15, 3, 10], seed=1)
    model(**padded(feats)).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(**PackingCollator(0, 20)(feats)).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)


def test_packed_samples_do_not_see_each_other_and_boundaries_are_masked():
    model = tiny_llama()
    feats = samples([6, 5], seed=2)
    batch = PackingCollator(0, 16)(feats)
    assert batch["input_ids"].shape == (1, 11)
    # Longest first: sample 0 (6 tokens) then sample 1 (5 tokens); the boundary label is masked.
    assert batch["labels"][0, 0].item() == -100 and batch["labels"][0, 6].item() == -100
    assert batch["position_ids"][0].tolist() == list(range(6)) + list(range(5))
    base = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    changed = batch["input_ids"].clone()
    changed[0, :6] = (changed[0, :6] % 200) + 3  # rewrite sample 0 entirely
    after = model(input_ids=changed, position_ids=batch["position_ids"], use_cache=False).logits
    torch.testing.assert_close(after[0, 6:], base[0, 6:])  # sample 1 does not notice
    alone = model(input_ids=batch["input_ids"][:, 6:]).logits
    torch.testing.assert_close(base[0, 6:], alone[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- chunked cross-entropy

@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_cross_entropy_equals_full_loss_and_gradient(chunk):
    torch.manual_seed(0)
    n, h, v = 50, 16, 97
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    targets[::4] = -100
    full = torch.nn.functional.cross_entropy(hidden @ weight.t() + bias, targets, ignore_index=-100)
    g_full = torch.autograd.grad(full * 3.0, (hidden, weight, bias))
    got = chunked_cross_entropy(hidden, weight, targets, bias, chunk=chunk)
    g_got = torch.autograd.grad(got * 3.0, (hidden, weight, bias))  # an upstream scale must flow through
    torch.testing.assert_close(got, full, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_got, g_full):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_chunked_cross_entropy_all_ignored_is_zero_not_nan():
    hidden = torch.randn(4, 8, requires_grad=True)
    loss = chunked_cross_entropy(hidden, torch.randn(11, 8), torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(hidden.grad == 0)


def test_causal_lm_loss_matches_model_loss_through_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama().train(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                            lora_dropout=0.0, init_lora_weights=False))
    batch = padded(samples([9, 14, 5], seed=3))
    ref = model(**batch).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    got = causal_lm_loss(model, batch, chunk=5)
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert ref_grads
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    # and packed + chunked together
    packed = PackingCollator(0, 32)(samples([9, 14, 5], seed=3))
    torch.testing.assert_close(causal_lm_loss(model, packed, chunk=8), ref, rtol=1e-5, atol=1e-6)


def test_shift_labels_matches_transformers_convention():
    labels = torch.tensor([[5, 6, 7, -100]])
    assert shift_labels(labels).tolist() == [[6, 7, -100, -100]]


# ---------------------------------------------------------------- fast int8 path

def _int8_bert(tiny_bert, quantization="int8"):
    from transformers import AutoModel

    from adapterkit.model.backbone import load_model
    from adapterkit.config import BackboneConfig

    return load_model(BackboneConfig(path=str(tiny_bert), quantization=quantization), AutoModel)


# Tolerance: the dequantize path is exactly a dense GEMM with the dequantized weight (fp32 round-off, 1e-5 relative);
# bitsandbytes' inference matmul also quantizes the activations, so against it we allow 3e-2 relative, and require the
# dequantize path to be no further from the full-precision model than bitsandbytes is.
DEQUANT_RTOL = 1e-5
VS_BNB_REL = 3e-2


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_dequantize_layer_matches_bitsandbytes(tiny_bert):
    import bitsandbytes as bnb

    from adapterkit.model.fast_int8 import dequantize, int8_parts, use_dequantize_path

    model = _int8_bert(tiny_bert)
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt))
    x = torch.randn(3, 10, layer.in_features)
    for training in (True, False):
        layer.train(training)
        xb = x.clone().requires_grad_(True)
        y_bnb = layer(xb)
        y_bnb.pow(2).sum().backward()
        holder = torch.nn.Module()  # switch only this layer, on a copy of the module's forward
        holder.layer = layer
        use_dequantize_path(holder)
        xf = x.clone().requires_grad_(True)
        y_fast = layer(xf)
        y_fast.pow(2).sum().backward()
        del layer.forward  # back to bitsandbytes for the next round
        cb, scb = int8_parts(layer)
        exact = torch.nn.functional.linear(x, dequantize(cb, scb, torch.float32), layer.bias)
        torch.testing.assert_close(y_fast, exact, rtol=DEQUANT_RTOL, atol=1e-6)
        assert _rel(y_fast, y_bnb) < VS_BNB_REL
        assert _rel(xf.grad, xb.grad) < VS_BNB_REL


def test_dequantize_model_matches_bitsandbytes_and_full_precision(tiny_bert):
    import bitsandbytes as bnb

    from adapterkit.model.fast_int8 import use_dequantize_path

    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(0))
    ref = _int8_bert(tiny_bert, "none").eval()(input_ids=ids).last_hidden_state
    model = _int8_bert(tiny_bert).eval()
    y_bnb = model(input_ids=ids).last_hidden_state
    n_int8 = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    assert n_int8 >= 12 and use_dequantize_path(model) == n_int8  # 2 layers x (q, k, v, out, intermediate, output) + pooler
    y_fast = model(input_ids=ids).last_hidden_state
    assert _rel(y_fast, y_bnb) < VS_BNB_REL
    assert _rel(y_fast, ref) <= _rel(y_bnb, ref) * 1.01 + 1e-6


def test_dequantize_path_keeps_int8_storage_and_trains_lora(tiny_bert, sentiment_files, tmp_path):
    import bitsandbytes as bnb

    from adapterkit.model import build

    recipes = {}
    grads = {}
    for mode in ("bitsandbytes", "dequantize"):
        r = recipe_from_dict(tiny_recipe(tiny_bert, sentiment_files, tmp_path / mode,
                                         backbone={"quantization": "int8", "int8_matmul": mode}, task={"pooling": "mean"}))
        recipes[mode] = r
        torch.manual_seed(0)
        model, _ = build(r, ["neg", "pos"])
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
        assert layers and all(m.weight.dtype == torch.int8 for m in layers)
        assert all(("forward" in vars(m)) == (mode == "dequantize") for m in layers)
        model.train()
        ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(1))
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1]))
        out.loss.backward()
        # (the backbone's unused pooler gets an adapter but no gradient under mean pooling)
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n and p.grad is not None}
    assert len(grads["dequantize"]) >= 12 and grads["dequantize"].keys() == grads["bitsandbytes"].keys()
    for n, g in grads["dequantize"].items():
        # On CPU bitsandbytes' training matmul dequantizes too, so the two agree to fp32 round-off.
        torch.testing.assert_close(g, grads["bitsandbytes"][n], rtol=1e-4, atol=1e-7, msg=n)


# ---------------------------------------------------------------- gradient checkpointing

def saved_bytes(model, batch) -> int:
    """Bytes of tensors autograd keeps for backward during one forward (what checkpointing is meant to cut)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    return total


@pytest.fixture(scope="module")
def deep_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("deep_bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256,
                         max_position_embeddings=128, architectures=["BertModel"])).save_pretrained(d)
    save_tokenizer(d)
    return d


@pytest.mark.parametrize("quantization,pooling", [("none", "mean"), ("int8", "auto")])
def test_gradient_checkpointing_takes_effect_on_peft_model(deep_bert, sentiment_files, tmp_path, quantization, pooling):
    from adapterkit.model import build

    ids = torch.randint(1000, 2000, (4, 64), generator=torch.Generator().manual_seed(0))
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1] * 2))
    kept, grads = {}, {}
    for gc in (False, True):
        r = recipe_from_dict(tiny_recipe(deep_bert, sentiment_files, tmp_path / str(gc), task={"pooling": pooling, "dropout": 0.0},
                                         adapter={"dropout": 0.0},
                                         backbone={"quantization": quantization, "gradient_checkpointing": gc}))
        torch.manual_seed(0)
        model, _ = build(r, ["neg", "pos"])
        model.train()
        kept[gc] = saved_bytes(model, batch)
        grads[gc] = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n and p.grad is not None}
    assert kept[True] < 0.35 * kept[False], kept
    assert len(grads[True]) >= 6 * 6 and grads[True].keys() == grads[False].keys()
    for n, g in grads[True].items():  # recomputation changes memory, not the gradients
        torch.testing.assert_close(g, grads[False][n], rtol=1e-4, atol=1e-7, msg=n)


# ---------------------------------------------------------------- wired into training

def _lm_files(tmp_path):
    import json
    import random

    rnd = random.Random(0)
    words = ["red", "green", "blue", "small", "large", "cat", "dog", "runs", "sleeps", "fast"]
    paths = {}
    for split, n in (("train", 24), ("validation", 8)):
        p = tmp_path / f"{split}.jsonl"
        with open(p, "w") as f:
            for _ in range(n):
                prompt = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 12)))
                completion = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 8)))
                f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
        paths[split] = p
    return paths


def _first_losses(log) -> list[float]:
    import json

    return [r["loss"] for r in map(json.loads, open(log)) if "loss" in r and r.get("event") is None]


@pytest.mark.slow
def test_packing_and_chunked_loss_train_like_the_plain_path(tiny_llama, tmp_path):
    """Same seed, same batches: step losses with packing and/or chunked loss match the plain padded run;
    examples are counted as samples, not packed rows."""
    from adapterkit.training import train

    files = _lm_files(tmp_path)
    runs = {}
    for name, extra in {"plain": {"loss_chunk_tokens": 0}, "both": {"packing": True, "loss_chunk_tokens": 16}}.items():
        r = recipe_from_dict(tiny_recipe(tiny_llama, files, tmp_path / name, task={"type": "causal_lm"},
                                         data={"max_length": 48, "chat_template": False},
                                         training={"epochs": 1, "batch_size": 6, "log_every": 1, "lr": 1e-3,
                                                   "group_by_length": False, **extra}))
        final = train(r)
        runs[name] = (_first_losses(tmp_path / name / "log.jsonl"), final)
    plain, final_plain = runs["plain"]
    assert len(plain) == 4 and final_plain["train"]["examples"] == 24
    for name in ("both",):
        losses, final = runs[name]
        assert final["train"]["examples"] == 24, name
        for a, b in zip(losses, plain):
            assert abs(a - b) < 1e-4 * max(1.0, abs(b)), (name, losses, plain)
        assert abs(final["validation"]["loss"] - final_plain["validation"]["loss"]) < 1e-3


def test_causal_lm_uses_the_chunked_loss_by_default():
    """loss_chunk_tokens null: a causal LM never builds the full logits in training, with the same loss; 0 turns it off."""
    from types import SimpleNamespace

    from adapterkit.training import switches

    model = tiny_llama().train()
    batch = padded(samples([9, 14, 5], seed=3))
    recipe = lambda chunk, kind="causal_lm": SimpleNamespace(training=SimpleNamespace(loss_chunk_tokens=chunk), task=SimpleNamespace(type=kind))
    auto, out_auto = switches.training_loss(recipe(None), model, batch)
    full, out_full = switches.training_loss(recipe(0), model, batch)
    assert out_auto is None and out_full is not None and out_full.logits.shape[-1] == 211
    torch.testing.assert_close(auto, full, rtol=1e-5, atol=1e-6)
    _, out_other = switches.training_loss(recipe(None, "label_words"), model, batch)
    assert out_other is not None  # other heads keep the model's own loss


def test_chunked_loss_stands_aside_for_a_zero3_partitioned_lm_head():
    """Under DeepSpeed ZeRO-3 the LM head's weight is an empty placeholder outside its module's forward (ds_id marks
    a partitioned parameter): the default path takes the model's own loss instead of reading the weight."""
    from adapterkit.training import switches

    model = tiny_llama().train()
    assert switches.auto_chunk_fits(model)
    model.get_output_embeddings().weight.ds_id = 0
    assert not switches.auto_chunk_fits(model)


def test_lm_only_switches_are_refused_for_other_heads(tiny_bert, sentiment_files, tmp_path):
    from adapterkit.errors import RecipeError
    from adapterkit.training import train

    for extra in ({"packing": True}, {"loss_chunk_tokens": 256}):
        r = recipe_from_dict(tiny_recipe(tiny_bert, sentiment_files, tmp_path / "x", training=extra))
        with pytest.raises(RecipeError, match=r"training\.(packing|loss_chunk_tokens): only for task.type causal_lm"):
            train(r)


def test_gradient_checkpointing_auto_is_on_for_causal_lm_only():
    from adapterkit.model.assemble import checkpointing_on

    def recipe(kind, setting="auto"):
        return recipe_from_dict({"backbone": {"path": "x", "gradient_checkpointing": setting}, "task": {"type": kind}})

    assert checkpointing_on(recipe("causal_lm")) and not checkpointing_on(recipe("sequence_classification"))
    assert not checkpointing_on(recipe("causal_lm", False)) and checkpointing_on(recipe("token_classification", True))
