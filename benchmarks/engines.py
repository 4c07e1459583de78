"""Exports checked by the engines that load them: onnxruntime's multi-adapter session, and a bundle re-verified.

    python benchmarks/engines.py [--runs 2]

Uses the LoRA runs of benchmarks/serve_load.py (all-MiniLM-L6-v2, full precision, SST-2 subsets, ranks 8 and 16;
trained there when missing). For the first `--runs` of them:
- onnxruntime: `adapterkit export RUN... --format onnx-adapter` (one base.onnx, one .onnx_adapter per run) and each
  run's own `--format onnx` export; on all 872 SST-2 validation sentences, one onnxruntime session switching adapters
  per call against each run's own ONNX graph and against the run in PyTorch (`adapterkit predict`): labels equal,
  largest logit difference.
- bundle: `adapterkit export RUN... --format bundle` of three runs, `adapterkit verify` on it, and on a copy with one
  byte of an adapter file changed (it must fail naming that file).
vLLM and llama.cpp are not part of this script yet.
Writes benchmarks/results/engines.{json,md}.
"""
from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"{SST2}: the SST-2 data is not there (see ../shared/data/README.md)")
    WORK.mkdir(parents=True, exist_ok=True)
    runs = train_runs(max(a.runs, 3))
    texts = [l.split("\t")[0] for l in (SST2 / "validation.tsv").read_text().splitlines()[1:]]
    t0 = time.perf_counter()
    result = {"onnxruntime": onnx_check(runs[: a.runs], texts), "bundle": bundle_check(runs[:3])}
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
              "## Not measured here", "",
              "- vLLM (CPU build) and llama.cpp (merged GGUF and GGUF LoRA) are not built or run by this script yet."]
    write_md(OUT / "engines.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
