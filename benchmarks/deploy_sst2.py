"""Deployment formats on CPU: the SST-2 LoRA run (8-bit MiniLM, 8,000 examples, 1 epoch) exported merged and as
ONNX (+ int8), then served four ways on the 872 validation sentences at batch 1 and 32 — PyTorch fp32, PyTorch
re-quantized to LLM.int8, ONNX Runtime fp32 and ONNX Runtime int8: latency, examples/s, peak RSS, file size,
accuracy; and a SmolLM2 WebNLG LoRA run exported to GGUF f16 and q8_0 (sizes, agreement with the merged model).

Each serving arm runs in its own process (own peak RSS), two threads, arms in the order A B C D then D C B A, the
faster of the two rounds counted. Every export is the user's command (`adapterkit train`, `adapterkit export`).

    python benchmarks/deploy_sst2.py [--gguf-run runs/bench-webnlg/lora_int8]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import adapterkit, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
WORK = ROOT / "runs" / "bench-deploy"
OUT = ROOT / "benchmarks" / "results"
ARMS = ("torch_fp32", "torch_int8", "ort_fp32", "ort_int8")


def sh(args: list[str], log: Path) -> float:
    return adapterkit(args, log, ROOT)


def serve(arm: str, folder: str, batch: int) -> None:
    """One arm in this process: load, predict every validation sentence at `batch`, print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from transformers import AutoTokenizer

    rows = [line.split("\t") for line in (DATA / "validation.tsv").read_text().splitlines()[1:]]
    texts, gold = [r[0] for r in rows], [int(r[1]) for r in rows]
    tok = AutoTokenizer.from_pretrained(folder)
    batches = [tok(texts[i:i + batch], padding=True, truncation=True, max_length=66, return_tensors="np")
               for i in range(0, len(texts), batch)]
    t_load = time.perf_counter()
    if arm.startswith("ort"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        path = Path(folder) / ("model_int8.onnx" if arm == "ort_int8" else "model.onnx")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        run = lambda b: sess.run(["logits"], {k: b[k].astype(np.int64) for k in names})[0]
        size = path.stat().st_size
    else:
        from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

        kw = {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)} if arm == "torch_int8" else {}
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32, **kw).eval()
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tok.model_input_names]

        def run(b):
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(b[k]) for k in keys}).logits.float().numpy()

        size = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    load_s = time.perf_counter() - t_load
    run(batches[0])  # warm-up
    lat, preds = [], []
    t0 = time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        preds += run(b).argmax(-1).tolist()
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    acc = float(np.mean([p == g for p, g in zip(preds, gold)]))
    print(json.dumps({"arm": arm, "batch": batch, "examples_per_s": round(len(texts) / total, 1),
                      "latency_ms_median": round(float(np.median(lat)) * 1000, 2), "accuracy": round(acc, 4),
                      "file_mib": round(size / 2**20, 1), "load_s": round(load_s, 2), "preds": preds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf-run", default=str(ROOT / "runs" / "bench-webnlg" / "lora_int8"))
    ap.add_argument("--stages", default="exports,serving,gguf", help="Comma list of exports, serving, gguf (each skipped when done).")
    ap.add_argument("--serve", nargs=3, metavar=("ARM", "FOLDER", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve(a.serve[0], a.serve[1], int(a.serve[2]))
    if not DATA.is_dir():
        sys.exit(f"{DATA}: SST-2 not found (see ../shared/data/README)")
    WORK.mkdir(parents=True, exist_ok=True)
    path = OUT / "deploy_sst2.json"
    res = json.loads(path.read_text()) if path.is_file() else {}

    def save():
        path.write_text(json.dumps(res, indent=1))

    stages = a.stages.split(",")
    run = WORK / "sst2-run"
    if "exports" in stages and not (run / "run.json").is_file() or '"finished"' not in (run / "run.json").read_text():
        res["train_s"] = sh(["train", "recipes/sst2-lora-int8.yaml", "-o", str(run), "--set", "data.max_train_samples=8000",
                             "--set", "training.overwrite=true"], WORK / "train.log")
    for fmt, extra in (("merged", []), ("onnx", ["--quantize", "int8"])):
        if "exports" in stages and fmt not in res.get("exports", {}):
            sh(["export", str(run), "--out", str(WORK / fmt), "--format", fmt, *extra], WORK / f"export-{fmt}.log")
            report = json.loads((WORK / fmt / "export_report.json").read_text())
            report.pop("files", None)
            res.setdefault("exports", {})[fmt] = report
            save()
    folders = {"torch_fp32": WORK / "merged", "torch_int8": WORK / "merged", "ort_fp32": WORK / "onnx", "ort_int8": WORK / "onnx"}
    if "serving" in stages and "serving" not in res:
        best: dict = {}
        for order in (ARMS, ARMS[::-1]):
            for batch in (1, 32):
                for arm in order:
                    r = run_script([str(Path(__file__)), "--serve", arm, str(folders[arm]), str(batch)], cwd=str(ROOT))
                    if "error" in r:
                        sys.exit(f"{arm} batch {batch}: {r['error']}")
                    key = f"{arm}@{batch}"
                    if key not in best or r["examples_per_s"] > best[key]["examples_per_s"]:
                        best[key] = r
        fp32_preds = best["torch_fp32@1"]["preds"]
        for r in best.values():
            r["agreement_with_torch_fp32"] = round(sum(x == y for x, y in zip(r.pop("preds"), fp32_preds)) / len(fp32_preds), 4)
        res["serving"] = best
        save()
    if "gguf" in stages and "gguf" not in res and Path(a.gguf_run, "run.json").is_file():
        res["gguf"] = {}
        for t in ("f16", "q8_0"):
            out = WORK / f"gguf-{t}"
            secs = sh(["export", a.gguf_run, "--out", str(out), "--format", "gguf", "--gguf-type", t], WORK / f"export-gguf-{t}.log")
            rep = json.loads((out / "export_report.json").read_text())
            g = rep["gguf_vs_merged"]
            res["gguf"][t] = {"file_mib": round((out / "model.gguf").stat().st_size / 2**20, 1), "greedy_identical": g["greedy_identical"],
                              "prompts": g["prompts"], "tokenizer_identical_ids": g["tokenizer_identical_ids"],
                              "logit_relative_diff": g["logits"]["relative_diff"], "export_s": secs}
        save()
    if "serving" in res:
        write_md(res, a.gguf_run)


def write_md(res: dict, gguf_run: str) -> None:
    on = res["exports"]["onnx"]
    v = on["verification"]
    s = res["serving"]
    lines = ["# Deployment formats on CPU: SST-2 LoRA run (8-bit all-MiniLM-L6-v2) and a SmolLM2 GGUF", "",
             "Command: `python benchmarks/deploy_sst2.py`. The run: `adapterkit train recipes/sst2-lora-int8.yaml --set "
             "data.max_train_samples=8000`; exports: `adapterkit export RUN --format merged` and `--format onnx --quantize int8`. "
             "Serving: all 872 validation sentences, tokenized before timing, two threads, each arm in its own process, "
             "two rounds in opposite arm order, the faster counted. Shared 2-core machine: ratios, not absolute times.", "",
             f"ONNX check (export_report.json): fp32 graph vs merged PyTorch, max |logit diff| "
             f"{on['onnx_vs_merged']['max_abs_diff']:.2e} on {on['onnx_vs_merged']['examples']} probe examples; predictions on the "
             f"{on['verified_on']['examples']} validation sentences agree with the trained run {v['onnx']['prediction_agreement']:.4f} "
             f"(accuracy {v['onnx']['delta_points']:+.2f} points); int8 graph: agreement {v['onnx_int8']['prediction_agreement']:.4f}, "
             f"accuracy {v['onnx_int8']['delta_points']:+.2f} points.", "",
             "| arm | batch | examples/s | x PyTorch fp32 | median latency ms | accuracy | agreement with PyTorch fp32 | file MiB | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for batch in (1, 32):
        ref = s[f"torch_fp32@{batch}"]["examples_per_s"]
        for arm in ARMS:
            r = s[f"{arm}@{batch}"]
            lines.append(f"| {arm} | {batch} | {r['examples_per_s']} | {r['examples_per_s'] / ref:.2f} | {r['latency_ms_median']} | "
                         f"{r['accuracy']:.4f} | {r['agreement_with_torch_fp32']:.4f} | {r['file_mib']} | {r.get('peak_rss_mib', '-')} |")
    if res.get("gguf"):
        lines += ["", f"GGUF (`adapterkit export {Path(gguf_run).relative_to(ROOT) if Path(gguf_run).is_absolute() else gguf_run} "
                  f"--format gguf --gguf-type T`, the WebNLG SmolLM2 LoRA int8 run), read back by transformers and compared with the merged model:",
                  "", "| type | file MiB | greedy text identical | token ids identical | logit diff / largest logit |", "|---|---|---|---|---|"]
        for t, g in res["gguf"].items():
            lines.append(f"| {t} | {g['file_mib']} | {g['greedy_identical']} of {g['prompts']} | {g['tokenizer_identical_ids']} of "
                         f"{g['prompts']} | {g['logit_relative_diff']:.2e} |")
    (OUT / "deploy_sst2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
