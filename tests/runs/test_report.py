"""Training report (plots + report.html) and experiment trackers through Accelerate, on a tiny BERT."""
import json
import shutil

import pytest

from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from adapterkit.errors import RecipeError, RunDirError
from adapterkit.runs.report import collect_series, read_log, write_report
from adapterkit.training import train
from helpers import cli_process, tiny_recipe, write_sentiment


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    files = write_sentiment(tmp, n_train=32, n_val=16)
    r = tiny_recipe(tiny_bert, files, tmp / "run", task={"pooling": "mean"},
                    training={"epochs": 2, "eval_every": 2, "log_every": 1, "trackers": ["tensorboard"]})
    final = train(resolve_paths(recipe_from_dict(r)))
    return tmp / "run", final


def _log(run_dir):
    return [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]


def _png(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path, format="png")  # raises on a file that is not a PNG
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # something was drawn, not a blank canvas
    return img


@pytest.mark.slow
def test_training_writes_report_and_plots_with_the_logged_series(run):
    run_dir, final = run
    log = _log(run_dir)
    steps = [r for r in log if "event" not in r]
    evals = [r for r in log if r.get("event") == "eval"]
    assert len(steps) >= 5 and len(evals) >= 3
    for name in ("loss", "learning_rate", "validation_metrics"):
        _png(run_dir / "plots" / f"{name}.png")
    plots = {p.name: p for p in collect_series(read_log(run_dir))}
    assert plots["loss"].series["train loss"] == ([r["step"] for r in steps], [r["loss"] for r in steps])
    assert plots["loss"].series["validation loss"] == ([r["step"] for r in evals], [r["loss"] for r in evals])
    assert plots["learning_rate"].series["lr"] == ([r["step"] for r in steps], [r["lr"] for r in steps])
    assert set(plots["validation_metrics"].series) == {"accuracy", "f1"}
    assert plots["validation_metrics"].series["accuracy"][1] == [r["accuracy"] for r in evals]
    # Warmup then linear decay: the plotted learning rate really changes over the run.
    lrs = plots["learning_rate"].series["lr"][1]
    assert max(lrs) > lrs[-1] > 0 or lrs[-1] == 0.0

    html = (run_dir / "report.html").read_text()
    assert '<table class="metrics">' in html
    table = html[html.index('<table class="metrics">'):html.index("</table>", html.index('<table class="metrics">'))]
    assert "<th>validation</th>" in table and "<th>accuracy</th>" in table
    assert f"<td>{final['validation']['accuracy']:.4g}</td>" in table
    assert html.count("data:image/png;base64,") == 3 and "src='plots/" not in html  # self-contained
    assert "training.lr" in html and "adapter.r" in html  # the run's settings


@pytest.mark.slow
def test_tensorboard_tracker_gets_the_logged_loss(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, final = run
    events = list((run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under RUN_DIR/trackers"
    logged = {r["step"]: r["loss"] for r in _log(run_dir) if "event" not in r}
    got = {}
    for ev in events:
        acc = EventAccumulator(str(ev.parent))
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:
            got = {e.step: e.value for e in acc.Scalars("train/loss")}
            assert "validation/accuracy" in acc.Tags()["scalars"]
            final_acc = acc.Scalars("final/validation/accuracy")[-1].value
            assert final_acc == pytest.approx(final["validation"]["accuracy"], abs=1e-6)
    assert sorted(got) == sorted(logged)
    assert all(got[s] == pytest.approx(logged[s], rel=1e-6) for s in logged)


@pytest.mark.slow
def test_report_command_regenerates(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("plots", "report.html", "trackers"))
    out = cli_process("report", copy)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["report"] == str(copy / "report.html")
    assert (copy / "report.html").read_text().count("data:image/png;base64,") == 3
    bad = cli_process("report", tmp_path / "nope")
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert last.startswith("adapterkit: error: ") and last.endswith("nope: no such run directory")


@pytest.mark.slow
def test_report_on_an_unfinished_run(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "partial"
    copy.mkdir()
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    first_eval = next(i for i, l in enumerate(lines) if '"eval"' in l)
    # A run killed mid-write: no metrics.json, a torn last line.
    (copy / "log.jsonl").write_text("\n".join(lines[:first_eval + 1]) + '\n{"step": 9, "lo')
    rep = write_report(copy)
    assert any("not finished" in n for n in rep.notes)
    assert rep.plot("validation_metrics").series["accuracy"][0] == [json.loads(lines[first_eval])["step"]]
    assert "No final metrics yet" in rep.html.read_text()
    (copy / "log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(RunDirError, match="line 2 is not JSON"):
        write_report(copy)


def test_unknown_or_missing_tracker_is_one_clear_error(tiny_bert, sentiment_files, tmp_path):
    from adapterkit.training.tracking import check_trackers

    with pytest.raises(RecipeError, match=r"training.trackers: unknown tracker 'tensorbord'"):
        check_trackers(["tensorbord"])
    from accelerate.tracking import get_available_trackers

    missing = [n for n in ("wandb", "mlflow", "aim", "comet_ml") if n not in {str(t) for t in get_available_trackers()}]
    if missing:
        with pytest.raises(RecipeError, match=rf"'{missing[0]}' needs its package installed"):
            check_trackers([missing[0]])
    r = resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, sentiment_files, tmp_path / "r", training={"trackers": ["nope"]})))
    with pytest.raises(RecipeError, match="training.trackers"):
        train(r)
    assert not (tmp_path / "r" / "log.jsonl").exists()  # failed before any work


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)


@pytest.mark.slow
def test_report_in_a_real_browser(run, tmp_path):
    """report.html as a person opens it: headless Chromium loads it with no console error and no network request
    (everything is inline), and every plot is drawn (its pixels are not one flat colour)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (make setup installs Debian's `chromium` where apt-get can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (requirements.lock)")
    import io

    import matplotlib.image as mpimg

    run_dir, _ = run
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((run_dir / "report.html").resolve().as_uri(), wait_until="networkidle")
            assert page.title().startswith("adapterkit report")
            images = page.locator("img")
            assert images.count() >= 3
            drawn = []
            for i in range(images.count()):
                img = images.nth(i)
                assert img.evaluate("e => e.complete && e.naturalWidth > 100"), f"plot {i} did not load"
                shot = mpimg.imread(io.BytesIO(img.screenshot()), format="png")
                drawn.append(float(shot[..., :3].std()))
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            b.close()
    assert errors == [], errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], requests
    assert all(s > 0.01 for s in drawn), drawn  # a blank plot area is one flat colour
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_of_a_run_folder_with_an_alias_bomb_recipe(tmp_path):
    """A run folder is data: a billion-laughs recipe.yaml costs the report its settings table (a note says why)
    instead of hanging while the table is flattened."""
    import time

    (tmp_path / "log.jsonl").write_text("")
    (tmp_path / "recipe.yaml").write_text("l0: &l0 [" + ", ".join(["x"] * 9) + "]\n"
                                          + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12)))
    t = time.perf_counter()
    rep = write_report(tmp_path)
    assert time.perf_counter() - t < 60
    assert any(n.startswith("recipe.yaml not shown:") and "YAML aliases" in n for n in rep.notes), rep.notes
    assert "<h2>Settings</h2>" not in rep.html.read_text()
