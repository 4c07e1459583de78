"""The ready Accelerate configs under recipes/accelerate/ parse with Accelerate's own loader and launcher checks."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import CLI_MODULE, ROOT

CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
EXPECTED = {  # file -> (distributed type, mixed precision)
    "cpu-multiprocess.yaml": ("MULTI_GPU", "no"),  # torchrun launcher; CPU via use_cpu (see the file)
    "gpu-single.yaml": ("NO", "bf16"),
    "multi-gpu-ddp.yaml": ("MULTI_GPU", "bf16"),
    "fsdp-bf16.yaml": ("FSDP", "bf16"),
    "fsdp-4bit.yaml": ("FSDP", "bf16"),
    "cpu-fsdp2.yaml": ("FSDP", "no"),  # torchrun launcher; FSDP2 on a CPU mesh (adapterkit/training/fsdp.py)
    "deepspeed-zero2.yaml": ("DEEPSPEED", "bf16"),
    "deepspeed-zero3.yaml": ("DEEPSPEED", "bf16"),
}
CPU = {"cpu-multiprocess.yaml", "cpu-fsdp2.yaml"}
ZERO_STAGE = {"deepspeed-zero2.yaml": "2", "deepspeed-zero3.yaml": "3"}


def test_every_expected_config_is_there():
    assert sorted(p.name for p in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_passes_launch_validation(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    cfg = load_config_from_file(str(path))  # rejects unknown top-level keys
    dist, mp = EXPECTED[path.name]
    assert cfg.distributed_type.value == dist and cfg.mixed_precision == mp
    assert cfg.num_processes >= 1 and cfg.num_machines == 1
    assert cfg.use_cpu == (path.name in CPU)

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(path), *CLI_MODULE, "train", "recipe.yaml"])  # -m adapterkit.cli
    args, _, _ = _validate_launch_command(args)  # what `accelerate launch` does with the file before starting anything
    assert args.num_processes == cfg.num_processes and args.mixed_precision == mp
    if dist == "FSDP":
        known = {a.dest for a in parser._actions}
        unknown = [k for k in cfg.fsdp_config if k not in known]
        assert not unknown, f"{path.name}: fsdp keys accelerate launch does not know: {unknown}"
        env = prepare_multi_gpu_env(args)  # the environment the FSDP plugin reads in each rank
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
        assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true" and env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        assert env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"  # as adapterkit's checkpoints are
        assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == ("false" if path.name in CPU else "true")
        _check_fsdp2_plugin(env)
    if dist == "DEEPSPEED":
        _check_deepspeed(path, cfg, parser, args)


def _check_deepspeed(path: Path, cfg, parser, args) -> None:
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    known = {a.dest for a in parser._actions}
    unknown = [k for k in cfg.deepspeed_config if k not in known]
    assert not unknown, f"{path.name}: deepspeed keys accelerate launch does not know: {unknown}"
    assert args.use_deepspeed and not args.cpu  # --cpu would start the simple launcher without DeepSpeed
    args.deepspeed_fields_from_accelerate_config = ",".join(cfg.deepspeed_config)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(args)  # the environment the DeepSpeed plugin reads in each rank
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == ZERO_STAGE[path.name]
    # Left "auto" so DeepSpeed takes the recipe's accumulation and clipping (an env value would override the recipe).
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env and "ACCELERATE_GRADIENT_CLIPPING" not in env
    assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == "none"
    assert "ACCELERATE_DEEPSPEED_CONFIG_FILE" not in env


def test_fsdp_4bit_matches_the_nf4_quant_storage():
    """FSDP shards only float storage: the nf4 config must pack 4-bit weights in the bf16 the config trains in."""
    import torch

    from adapterkit.model.backbone import quantization_config

    qc = quantization_config("nf4", torch.bfloat16)
    assert qc.bnb_4bit_quant_storage == torch.bfloat16 or str(qc.bnb_4bit_quant_storage) == "bfloat16"
    assert qc.load_in_4bit and not qc.load_in_8bit


def _check_fsdp2_plugin(env: dict) -> None:
    """The FSDP plugin each rank builds from that environment is FSDP2 and keeps no FSDP1-only option."""
    import os
    from unittest import mock

    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    with mock.patch.dict(os.environ, fsdp):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.use_orig_params is None and plugin.sync_module_states is None and plugin.forward_prefetch is None


def test_cpu_fsdp_runs_fsdp2_only(monkeypatch):
    """FSDP1 cannot run on CPU processes: one line naming the FSDP2 config."""
    from accelerate.utils import DistributedType

    from adapterkit.errors import RecipeError
    from adapterkit.training import fsdp

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")

    class Acc:
        distributed_type = DistributedType.MULTI_CPU
        mixed_precision = "no"

    with pytest.raises(RecipeError, match="fsdp_version: 2.*cpu-fsdp2.yaml"):
        fsdp.enable_on_cpu(Acc())
