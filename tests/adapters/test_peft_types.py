"""Every PEFT type docs/peft-types.md lists as working trains through `adapter.method: peft`, reloads to the same
scores, and (where PEFT merges it) exports merged within the tolerance; refused types are refused with their
reason. Bad settings are one line naming the key and PEFT's valid settings."""
import json
import sys
from pathlib import Path

import pytest

from helpers import ROOT, cli, tiny_recipe, write_recipe

sys.path.insert(0, str(ROOT / "benchmarks"))
from peft_types import KWARGS  # noqa: E402  the settings the table was measured with

TABLE = json.loads((ROOT / "benchmarks" / "results" / "peft_types.json").read_text())["types"]
WORKING = [r["type"] for r in TABLE if r["status"] == "works"]


def test_table_is_the_one_in_docs():
    text = (ROOT / "docs" / "peft-types.md").read_text()
    assert len(WORKING) >= 20 and {"lora", "loha", "lokr", "vera", "adalora", "oft", "ln_tuning", "ia3"} <= set(WORKING)
    for row in TABLE:
        assert f"| `{row['type']}` | {row['status']} |" in text


@pytest.mark.slow
@pytest.mark.parametrize("peft_type", WORKING)
def test_type_trains_reloads_and_merges(peft_type, tiny_bert, sentiment_files, tmp_path):
    import adapterkit
    from adapterkit.deploy import export
    from adapterkit.inference import eval_run
    from adapterkit.model import is_mergeable

    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", adapter={}, training={"max_steps": 3, "lr": 1e-2})
    r["adapter"] = {"method": "peft", "peft_type": peft_type, **KWARGS.get(peft_type, {})}
    recipe = adapterkit.recipe_from_dict(r)
    final = adapterkit.train(recipe)
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"].lower() == peft_type
    assert eval_run(tmp_path / "run")["loss"] == final["validation"]["loss"]  # the reloaded run scores what training did
    if is_mergeable(recipe):
        report = export(tmp_path / "run", tmp_path / "merged", requantize=False)
        assert report["merged_vs_unmerged"]["max_abs_diff"] <= report["merged_vs_unmerged"]["tolerance"]
        assert not list(Path(tmp_path / "merged").glob("adapter_config.json"))


def test_bad_peft_settings_are_one_line(tiny_bert, sentiment_files, tmp_path):
    for adapter, expected in (({"peft_type": "loha", "rr": 4}, "adapter.rr: not a setting of PEFT's LoHaConfig; its settings: ["),
                              ({"peft_type": "loha", "r": "four"}, "adapter.r: Input should be a valid integer"),
                              ({"peft_type": "nonsense"}, "adapter.peft_type: 'nonsense' is not a PEFT method type"),
                              ({"peft_type": "xlora"}, "adapter.peft_type: xlora is not supported through adapterkit: mixes several")):
        r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", replace={"adapter": {"method": "peft", **adapter}})
        res = cli("train", write_recipe(tmp_path / "r.yaml", r))
        err = [l for l in res.err_lines if "kernels" not in l]
        assert res.code == 2 and len(err) == 1 and expected in err[0], (expected, err)
