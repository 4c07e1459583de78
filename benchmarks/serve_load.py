"""Serving 8 runs from one base against 8 merged models: a loopback load test of `adapterkit serve`.

    python benchmarks/serve_load.py [--clients 32] [--seconds 60] [--runs 8] [--threads 1] [--max-batch 32] [--max-wait-ms 5]

Eight LoRA runs on all-MiniLM-L6-v2 (full precision, so the merged exports compare like for like) are trained on
seeded 400-example SST-2 subsets (different seeds and ranks), each exported merged (`adapterkit export`). Three arms,
one after another, each on 127.0.0.1 with the same batch settings and torch threads per server process:
- shared: one `adapterkit serve` process with the 8 runs on one base (the LoRA runs mix in one batch);
- one_merged: one process serving one merged model (the same app and batcher over a plain transformers model);
- eight_merged: 8 such processes, one merged model each (the alternative without a shared base).
Load: `--clients` client threads for `--seconds`, each sending one request at a time (1-4 SST-2 validation sentences,
an adapter drawn at random per request, seeded) over keep-alive connections (one per client and server; one the
server closed while idle is opened again and the request sent once more, counted as `reconnects`); the one_merged
arm sends every request to its one model. Every answer is checked against `adapterkit predict` of its own run (label
exactly, score within 1e-3); a request without a 200 answer counts as lost. Reported: requests and texts per second, p50/p99 latency, peak RSS of the server
processes (VmHWM, summed over the 8 processes), and the ratios the goals name. Writes
benchmarks/results/serve_load.{json,md}.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import adapterkit, write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
WORK = ROOT / "runs" / "bench-serve"
OUT = ROOT / "benchmarks" / "results"


def train_runs(n: int) -> list[Path]:
    runs = []
    for i in range(n):
        run = WORK / f"run{i}"
        if not (run / "run.json").is_file() or json.loads((run / "run.json").read_text()).get("status") != "finished":
            adapterkit(["train", "recipes/sst2-lora-int8.yaml", "--set", "backbone.quantization=none",
                        "--set", f"training.output_dir={run}", "--set", f"training.seed={i}", "--set", "data.max_train_samples=400",
                        "--set", f"adapter.r={(8, 16)[i % 2]}", "--set", f"adapter.alpha={(16, 32)[i % 2]}",
                        "--set", "data.max_eval_samples=200", "--set", "data.test=null",
                        "--set", "training.overwrite=true"], WORK / f"train{i}.log", ROOT)
        if not (WORK / f"merged{i}" / "config.json").is_file():
            adapterkit(["export", str(run), "--out", str(WORK / f"merged{i}"), "--verify-samples", "16"], WORK / f"export{i}.log", ROOT)
        runs.append(run)
    return runs


def serve_merged(folder: str, run: str, port: int, max_batch: int, max_wait_ms: float) -> None:
    """A server process for one merged model: the same app and batcher as `adapterkit serve`, over a plain
    transformers model loaded from the export."""
    import uvicorn
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapterkit.inference.pool import RunPool
    from adapterkit.model import LoadedRun, load_run_recipe
    from adapterkit.serving import ServeSettings, create_app

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    labels = json.loads((Path(run) / "labels.json").read_text())["labels"]
    pool = RunPool()
    name = Path(run).name
    pool.runs[name] = LoadedRun(model, AutoTokenizer.from_pretrained(folder), load_run_recipe(run), labels, [])
    pool.paths[name] = Path(folder)
    app = create_app(pool, ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    finally:
        app.state.batcher.stop()


def start(argv: list[str], port: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server {argv[:4]} ended: {proc.stderr.read()[-500:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"server {argv[:4]} did not answer /health in 300 s")


def peak_rss_mib(proc: subprocess.Popen) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(targets: dict[str, int], expected: dict, texts: list[str], clients: int, seconds: float, seed: int) -> dict:
    """`clients` threads, each on its own keep-alive connection, one request at a time until `seconds` pass."""
    stop_at = time.monotonic() + seconds
    lat: list[float] = []
    counts = {"requests": 0, "texts": 0, "wrong": 0, "lost": 0, "reconnects": 0}
    lock = threading.Lock()

    def client(k: int) -> None:
        rnd = random.Random(seed * 1000 + k)
        conns: dict[int, http.client.HTTPConnection] = {}
        while time.monotonic() < stop_at:
            name = rnd.choice(sorted(targets))
            sent = rnd.sample(texts, rnd.randint(1, 4))
            port = targets[name]
            t0 = time.perf_counter()
            body, status = None, 0
            for attempt in (0, 1):  # a kept-alive connection the server closed while idle is opened again, once
                reused = port in conns
                c = conns.setdefault(port, http.client.HTTPConnection("127.0.0.1", port, timeout=120))
                try:
                    c.request("POST", "/v1/predict", json.dumps({"adapter": name, "texts": sent}), {"Content-Type": "application/json"})
                    r = c.getresponse()
                    status, body = r.status, json.loads(r.read())
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    conns.pop(port).close()
                    if not reused or attempt:
                        break
                    with lock:
                        counts["reconnects"] += 1
                except (OSError, http.client.HTTPException, ValueError):
                    conns.pop(port).close()
                    break
            ok = status == 200
            dt = time.perf_counter() - t0
            with lock:
                if not ok:
                    counts["lost"] += 1
                    continue
                lat.append(dt)
                counts["requests"] += 1
                counts["texts"] += len(sent)
                for t, row in zip(sent, body["predictions"]):
                    want = expected[name][t]
                    if row["label"] != want["label"] or abs(row["score"] - want["score"]) > 1e-3:
                        counts["wrong"] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {**counts, "seconds": round(wall, 1), "requests_per_s": round(counts["requests"] / wall, 1),
            "texts_per_s": round(counts["texts"] / wall, 1),
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None}


def arm(name: str, servers: list[tuple[list[str], int]], targets: dict[str, int], a, expected, texts) -> dict:
    procs = [start(argv, port, a.threads) for argv, port in servers]
    try:
        load(targets, expected, texts, min(a.clients, 8), 5, seed=99)  # warm-up, not counted
        result = load(targets, expected, texts, a.clients, a.seconds, seed=a.seed)
        result["peak_rss_mib"] = round(sum(peak_rss_mib(p) for p in procs), 1)
        result["processes"] = len(procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)
    print(name, json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per server process")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve-merged", nargs=3, metavar=("FOLDER", "RUN", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_merged:
        folder, run, port = a.serve_merged
        serve_merged(folder, run, int(port), a.max_batch, a.max_wait_ms)
        return
    if not SST2.is_dir():
        sys.exit(f"{SST2}: the SST-2 data is not there (see ../shared/data/README.md)")
    WORK.mkdir(parents=True, exist_ok=True)
    runs = train_runs(a.runs)
    texts = [l.split("\t")[0] for l in (SST2 / "validation.tsv").read_text().splitlines()[1:201]]
    from adapterkit.inference import predict

    expected = {r.name: dict(zip(texts, predict(r, texts))) for r in runs}
    batch = ["--max-batch", str(a.max_batch), "--max-wait-ms", str(a.max_wait_ms)]
    cli = str(Path(sys.executable).with_name("adapterkit"))
    merged = lambda i, port: ([sys.executable, __file__, "--serve-merged", str(WORK / f"merged{i}"), str(runs[i]), str(port), *batch], port)  # noqa: E731
    results = {
        "shared": arm("shared", [([cli, "serve", *map(str, runs), "--port", "8701", *batch], 8701)],
                      {r.name: 8701 for r in runs}, a, expected, texts),
        "one_merged": arm("one_merged", [merged(0, 8710)], {runs[0].name: 8710}, a, expected, texts),
        "eight_merged": arm("eight_merged", [merged(i, 8720 + i) for i in range(len(runs))],
                            {r.name: 8720 + i for i, r in enumerate(runs)}, a, expected, texts),
    }
    s, one, eight = results["shared"], results["one_merged"], results["eight_merged"]
    rss_one, rss_eight = s["peak_rss_mib"] / one["peak_rss_mib"], s["peak_rss_mib"] / eight["peak_rss_mib"]
    speed, bad = s["texts_per_s"] / one["texts_per_s"], s["wrong"] + s["lost"]
    goals = {  # name: (value, target, met)
        "rss_vs_one_merged": (round(rss_one, 2), "<= 1.3", rss_one <= 1.3),
        "rss_vs_eight_merged": (round(rss_eight, 2), "<= 0.25", rss_eight <= 0.25),
        "throughput_vs_one_merged": (round(speed, 2), ">= 0.8", speed >= 0.8),
        "wrong_or_lost_shared": (bad, "0", bad == 0),
    }
    payload = {"settings": vars(a), "cpu": os.cpu_count(), "arms": results,
               "goals": {k: {"value": v, "goal": g, "met": m} for k, (v, g, m) in goals.items()}}
    (OUT / "serve_load.json").write_text(json.dumps(payload, indent=1))
    lines = ["# Serving 8 runs from one base against 8 merged models (all-MiniLM-L6-v2, CPU, loopback)", "",
             f"Command: `python benchmarks/serve_load.py --clients {a.clients} --seconds {a.seconds:g} --runs {a.runs} "
             f"--threads {a.threads} --max-batch {a.max_batch} --max-wait-ms {a.max_wait_ms:g}`; {os.cpu_count()} CPU cores, "
             f"{a.threads} torch thread(s) per server process, the client threads in the same machine.", "",
             "| arm | processes | requests/s | texts/s | p50 ms | p99 ms | peak RSS MiB | wrong | lost | reconnects |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['processes']} | {r['requests_per_s']} | {r['texts_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['peak_rss_mib']} | {r['wrong']} | {r['lost']} | {r['reconnects']} |")
    lines += ["", "| goal | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {k} | {v} | {g} | {'yes' if m else 'no'} |" for k, (v, g, m) in goals.items()]
    write_md(OUT / "serve_load.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
