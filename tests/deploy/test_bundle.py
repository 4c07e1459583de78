"""`adapterkit export RUN... --format bundle`: one base and several runs with a manifest; `adapterkit verify` re-checks
the hashes and each adapter export against its run, and names a tampered, missing or foreign file."""
from __future__ import annotations

import json

import pytest

from helpers import cli

pytestmark = pytest.mark.slow  # the runs it bundles are trained once per session


@pytest.fixture(scope="module")
def bundle(base_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    res = cli("export", base_runs["lora0"], f"pool={base_runs['bottleneck0']}", base_runs["full"], "--format", "bundle",
              "--out", out, "--verify-samples", "8")
    assert res.code == 0, res.err
    return out


def test_a_bundle_holds_one_base_and_each_run_in_its_format(bundle, base_runs):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["runs"]) == {"lora0", "pool", "full"}
    assert {n: r["format"] for n, r in manifest["runs"].items()} == {"lora0": "adapter", "pool": "adapter", "full": "merged"}
    assert manifest["runs"]["pool"]["method"] == "bottleneck" and manifest["runs"]["lora0"]["labels"] == ["neg", "pos"]
    assert all(r["verification"] for r in manifest["runs"].values())
    assert "base/config.json" in manifest["base"]["files"] and any(f.endswith(".safetensors") for f in manifest["base"]["files"])
    assert (bundle / "runs" / "lora0" / "adapter_model.safetensors").is_file()
    assert not list(bundle.rglob("*.bin")) and not list(bundle.rglob("*.pt"))


def test_verify_passes_and_rechecks_the_adapters_against_their_runs(bundle):
    res = cli("verify", bundle)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["runs"]["lora0"]["rechecked"] and out["runs"]["pool"]["rechecked"]
    assert out["runs"]["lora0"]["max_abs_diff"] < 1e-4 and out["runs"]["full"] == {"rechecked": False}


@pytest.mark.parametrize("change", ["tamper", "remove", "add"])
def test_verify_names_a_changed_missing_or_foreign_file(bundle, tmp_path, change):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    target = copy / "runs" / "lora0" / "adapter_model.safetensors"
    if change == "tamper":
        data = bytearray(target.read_bytes())
        data[-1] ^= 1
        target.write_bytes(bytes(data))
        says = "not the file the bundle was written with"
    elif change == "remove":
        target.unlink()
        says = "missing"
    else:
        target = copy / "base" / "extra.safetensors"
        target.write_bytes(b"x")
        says = "not part of the bundle"
    res = cli("verify", copy, "--files-only")
    assert res.code == 2 and len(res.err_lines) == 1
    assert str(target) in res.err and says in res.err


def test_several_runs_need_the_bundle_format_and_one_base(base_runs, lm_runs, tmp_path, no_model):
    res = cli("export", base_runs["lora0"], base_runs["ia3"], "--out", tmp_path / "x")
    assert res.code == 2 and "--format merged exports one run" in res.err
    res = cli("export", base_runs["lora0"], lm_runs["lm1"], "--format", "bundle", "--out", tmp_path / "y")
    assert res.code == 2 and "not on the same base" in res.err and not (tmp_path / "y").exists()
