"""`BottleneckModel`: the PEFT tuner that places bottleneck adapters by model family."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from peft.tuners.tuners_utils import BaseTuner

from .families import FAMILIES, placement_targets
from .layer import BottleneckLayer


class BottleneckModel(BaseTuner):
    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config, model_config: dict):
        if peft_config.target_modules is None:
            peft_config.target_modules, residual = placement_targets(
                peft_config.placement,
                model_config.get("model_type"),
                peft_config.layers_to_transform,
                getattr(peft_config, "adapter_input", "projection"),
            )
            if peft_config.residual_inside is None:
                peft_config.residual_inside = residual
        if peft_config.residual_inside is None:
            peft_config.residual_inside = False
        return peft_config

    def _hidden_size(self) -> int:
        cfg = getattr(self.model, "config", None)
        size = getattr(cfg, "hidden_size", None) or getattr(getattr(cfg, "text_config", None), "hidden_size", None)
        if size is None:
            raise ValueError("bottleneck parallel placement needs model.config.hidden_size")
        return size

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key=None, **kw):
        parallel = peft_config.placement == "parallel"
        post_norm = getattr(peft_config, "adapter_input", "projection") == "post_norm"
        if parallel:
            dim = self._hidden_size()
        elif post_norm:
            base = target.get_base_layer() if isinstance(target, BottleneckLayer) else target
            if not all(hasattr(base, a) for a in ("dense", "dropout", "LayerNorm")):
                raise ValueError(
                    f"bottleneck (adapter_input: post_norm): {current_key} is not a post-norm output block "
                    "(dense, dropout, LayerNorm)"
                )
            dim = base.dense.out_features
        else:
            base = target.get_base_layer() if isinstance(target, BottleneckLayer) else target
            dim = getattr(base, "out_features", None)
            if dim is None:
                raise ValueError(
                    f"bottleneck ({peft_config.placement}): {current_key} is not a linear layer; "
                    "sequential placements wrap an output projection"
                )
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new = BottleneckLayer(
            target,
            adapter_name,
            peft_config,
            dim,
            parallel=parallel,
            residual_inside=bool(peft_config.residual_inside),
            post_norm=post_norm,
        )
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """PEFT's mixed-batch inference (`model(..., adapter_names=[one per row])`), as LoRA has it: each
        bottleneck layer gets the row names for this forward only."""
        names = kwargs.pop("adapter_names", None)
        if names is None:
            yield
            return
        if self.training:
            raise ValueError("adapter_names: mixed-adapter batches are for inference (call model.eval() first)")
        known = {a for m in self.model.modules() if isinstance(m, BottleneckLayer) for a in m.bottleneck_down}
        unknown = sorted({n for n in names if n != "__base__"} - known)
        if unknown:
            raise ValueError(f"adapter_names: no bottleneck adapter named {', '.join(unknown)}")
        handles = [
            m.register_forward_pre_hook(partial(_with_names, names=list(names)), with_kwargs=True)
            for m in self.model.modules()
            if isinstance(m, BottleneckLayer)
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _check_merge_allowed(self):
        raise ValueError("bottleneck adapters are not mergeable: they add a non-linear module to the network")

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            self._check_merge_allowed()
        for name, module in list(self.model.named_modules()):
            if isinstance(module, BottleneckLayer):
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, module.get_base_layer())
        return self.model

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        pass  # adapter weights are float32 by construction (they compute in float over any base dtype)


def _with_names(module, args, kwargs, names):
    return args, {**kwargs, "adapter_names": names}


__all__ = ["BottleneckModel", "FAMILIES", "placement_targets"]
