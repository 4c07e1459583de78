"""Fixtures and pytest hooks only: tiny random models (fast), sentiment files, the no-model guard. The plain helpers
(paths, data writers, the tiny recipe, the command-line runners) are in helpers.py, which every test file imports
as `from helpers import ...`; no test file imports this one. Tests are organised by package (tests/<package>/);
every test that trains a model is marked `slow` (`make test-fast` skips them), and the guard below fails a test
that trains without it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# `make test` runs two workers (pytest -n 2) on two cores: each worker's torch (and every process it starts) takes
# one thread, since two processes with a thread per core each make OpenMP spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tokenized splits are not kept between tests (each test sees its own tokenizing); tests/data/test_token_cache.py
# turns the cache on.
os.environ.setdefault("ADAPTERKIT_TOKEN_CACHE_MIB", "0")

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # `from helpers import ...` (pytest's default prepend import mode puts it there as well)
    sys.path.insert(0, _TESTS)

from helpers import save_tokenizer, write_sentiment  # noqa: E402

from adapterkit.cli import quiet_libraries  # noqa: E402

quiet_libraries()

_CURRENT = {"slow": True, "id": ""}


# Seconds each test file took in a whole run (two workers): `make test` hands the longest files out first, so no
# long file starts last while the other worker idles. `ADAPTERKIT_STORE_DURATIONS=1 make test` writes it again.
_DURATIONS = Path(__file__).with_name("durations.json")
_SPENT: dict[str, float] = {}


def _file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False  # the order below (longest first), not xdist's (most tests first)


def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadfile` (make test) each file runs on one worker, so its module fixtures train once
    and a test may build on the one before it; files go out longest first (durations.json; a file not in it counts
    10 s). Sorted in the workers, whose collection order is the order xdist hands the files out in."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    seconds = json.loads(_DURATIONS.read_text()) if _DURATIONS.is_file() else {}
    items.sort(key=lambda i: -seconds.get(_file(i.nodeid), 10.0))  # stable: a file's tests keep their order


def pytest_runtest_logreport(report):
    if os.environ.get("ADAPTERKIT_STORE_DURATIONS"):
        f = _file(report.nodeid)
        _SPENT[f] = _SPENT.get(f, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("ADAPTERKIT_STORE_DURATIONS") and not os.environ.get("PYTEST_XDIST_WORKER") and _SPENT:
        ranked = dict(sorted(((f, round(s, 1)) for f, s in _SPENT.items()), key=lambda kv: -kv[1]))
        _DURATIONS.write_text(json.dumps(ranked, indent=1) + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before the test's fixtures are set up, so a fixture that trains counts for the first test that needs it.
    _CURRENT.update(slow=item.get_closest_marker("slow") is not None, id=item.nodeid)


@pytest.fixture(autouse=True, scope="session")
def _training_needs_the_slow_mark():
    """Every training run builds the loop's NonFiniteGuard: a test without the `slow` mark that gets there fails."""
    import adapterkit.training.loop as loop

    real = loop.NonFiniteGuard

    def guarded(*args, **kwargs):
        if not _CURRENT["slow"]:
            raise AssertionError(f"{_CURRENT['id']} trains a model: mark it @pytest.mark.slow")
        return real(*args, **kwargs)

    loop.NonFiniteGuard = guarded
    yield
    loop.NonFiniteGuard = real


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer random BERT with the MiniLM tokenizer (vocabulary 30,522)."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128, architectures=["BertModel"])
    BertModel(cfg).save_pretrained(d)
    save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def tiny_bert_nodrop(tmp_path_factory) -> Path:
    """A 2-layer random BERT without dropout (frozen backbones still run dropout in train mode): runs over several
    processes must equal one process exactly, so nothing may draw random numbers per process."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny_bert_nodrop")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     architectures=["BertModel"])
    BertModel(cfg).save_pretrained(d)
    save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer random Llama decoder sharing the MiniLM tokenizer (pad id 0)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, max_position_embeddings=128, pad_token_id=0, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d)
    save_tokenizer(d)
    return d


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, Path]:
    """write_sentiment's default files in the test's tmp_path."""
    return write_sentiment(tmp_path)


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: bad input must be reported before one."""
    import adapterkit.model.assemble

    def no_model_load(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(adapterkit.model.assemble, "load_model", no_model_load)  # every task model is loaded there


@pytest.fixture(scope="session")
def base_runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """Runs on one tiny BERT, one epoch each: two LoRA and two bottleneck runs (seeds 0 and 1), IA3, prompt tuning,
    full fine-tuning and a LoRA NER run; for shared-base inference and the server."""
    import adapterkit
    from helpers import tiny_recipe, write_ner

    d = tmp_path_factory.mktemp("base_runs")
    files, ner = write_sentiment(d), write_ner(d)
    methods = {
        "lora": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "bottleneck": {"method": "bottleneck", "placement": "pfeiffer", "bottleneck_size": 8},
        "ia3": {"method": "ia3"},
        "prompt": {"method": "prompt_tuning", "num_virtual_tokens": 4},
        "full": {"method": "full"},
    }
    runs = {}
    for name, adapter in methods.items():
        for seed in (0, 1) if name in ("lora", "bottleneck") else (0,):
            key = f"{name}{seed}" if name in ("lora", "bottleneck") else name
            runs[key] = d / key
            r = tiny_recipe(tiny_bert, files, runs[key], replace={"adapter": adapter}, training={"epochs": 1, "seed": seed})
            adapterkit.train(adapterkit.recipe_from_dict(r))
    runs["ner"] = d / "ner"
    r = tiny_recipe(tiny_bert, ner, runs["ner"], task={"type": "token_classification"}, training={"epochs": 1})
    adapterkit.train(adapterkit.recipe_from_dict(r))
    return runs


@pytest.fixture(scope="session")
def lm_runs(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """Two causal-LM LoRA runs on one tiny Llama (different seeds and step counts)."""
    import json

    import adapterkit
    from helpers import tiny_recipe

    d = tmp_path_factory.mktemp("lm_runs")
    f = d / "train.jsonl"
    colors = ["blue", "green", "red", "white"]
    f.write_text("".join(json.dumps({"prompt": f"what color is item {i % 4} ?", "completion": f" {colors[i % 4]}"}) + "\n"
                         for i in range(16)))
    runs = {}
    for i in (1, 2):
        runs[f"lm{i}"] = d / f"lm{i}"
        r = tiny_recipe(tiny_llama, {"train": f, "validation": f}, runs[f"lm{i}"],
                        task={"type": "causal_lm", "generation": {"max_new_tokens": 4, "batch_size": 4}},
                        training={"max_steps": 8 * i, "batch_size": 8, "lr": 3e-2, "seed": i})
        adapterkit.train(adapterkit.recipe_from_dict(r))
    return runs
