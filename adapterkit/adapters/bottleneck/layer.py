"""The bottleneck adapter layer: wraps one module of the backbone and adds h + s * up(act(down(h)))."""

from __future__ import annotations

from typing import Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..mixing import row_spans


def adapter_delta(h: torch.Tensor, down, up, ln, act, dropout, scaling: float) -> torch.Tensor:
    """s * up(act(down(h))) in float32 (the adapter's own dtype over any base dtype), cast back to h's dtype."""
    x = h.to(torch.float32)
    if ln is not None:
        x = ln(x)
    return (up(dropout(act(down(x)))) * scaling).to(h.dtype)


class SourceAdapter(nn.Module):
    """A trained adapter inside a composition (fusion, stack): frozen, computing what it computed in its own run."""

    def __init__(self, dim: int, spec: dict) -> None:
        super().__init__()
        self.down = nn.Linear(dim, spec["bottleneck_size"])
        self.up = nn.Linear(spec["bottleneck_size"], dim)
        self.ln = nn.LayerNorm(dim) if spec.get("layer_norm") else None
        self.activation, self.scaling = spec["activation"], float(spec["scaling"])
        self.requires_grad_(False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        from transformers.activations import ACT2FN

        return adapter_delta(h, self.down, self.up, self.ln, ACT2FN[self.activation], nn.Identity(), self.scaling)


class Fusion(nn.Module):
    """AdapterFusion (Pfeiffer et al. 2021): per position, attention over the source adapters' outputs with the query
    from what they read (the block's output). Keys and values read each source's delta: the input they share adds
    the same score to every source, so the softmax is the paper's. The value projection starts as the identity, so
    training starts from the mean of the sources' deltas."""

    def __init__(self, dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim, bias=False)
        self.temperature = temperature
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.value.weight.copy_(torch.eye(dim))

    def weights(self, h: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Attention weights (..., sources) for the block output h (..., dim) and the deltas (..., sources, dim)."""
        scores = (self.query(h.to(torch.float32)).unsqueeze(-2) * self.key(deltas)).sum(-1)
        return (scores / self.temperature).softmax(-1)

    def forward(self, h: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
        d = torch.stack([t.to(torch.float32) for t in deltas], dim=-2)
        return (self.weights(h, d).unsqueeze(-1) * self.value(d)).sum(-2).to(h.dtype)


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """Sequential (houlsby, pfeiffer): y = base(x); y + s * adapter(y).
    Parallel: the adapter reads the block's input x and its output joins the block's output, before the residual.
    For blocks that add the residual themselves (BERT's BertOutput(h, residual)), adding it to the residual argument
    is the same sum, so the wrapped block stays untouched.
    Post-norm input (`post_norm`, wrapping a whole BERT output block dense -> dropout -> LayerNorm(. + residual)):
    h = dropout(dense(x)); y = LayerNorm(h + residual + s * adapter(LayerNorm(h + residual))).

    Adapter weights are float32 whatever the base dtype (int8, bf16): they compute in float and cast back."""

    # bottleneck_sources is not listed: PEFT's set_adapter would make the frozen source adapters trainable.
    adapter_layer_names = ("bottleneck_down", "bottleneck_up", "bottleneck_ln", "bottleneck_fusion")
    other_param_names = ("bottleneck_scaling", "bottleneck_act", "bottleneck_dropout")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config,
        dim: int,
        parallel: bool = False,
        residual_inside: bool = False,
        post_norm: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.dim, self.parallel, self.residual_inside, self.post_norm = dim, parallel, residual_inside, post_norm
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_ln = nn.ModuleDict()
        self.bottleneck_act: dict[str, nn.Module] = {}
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_scaling: dict[str, float] = {}
        self.bottleneck_sources = nn.ModuleDict()  # name -> ModuleList of SourceAdapter (fusion, stack)
        self.bottleneck_fusion = nn.ModuleDict()  # name -> Fusion
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config) -> None:
        from transformers.activations import ACT2FN

        if config.activation not in ACT2FN:
            raise ValueError(
                f"activation: {config.activation!r} is not a transformers activation; try relu, gelu, silu or tanh"
            )
        device = self._base_device()
        if getattr(config, "sources", None):
            sources = nn.ModuleList(SourceAdapter(self.dim, spec) for spec in config.sources)
            self.bottleneck_sources[adapter_name] = sources.to(device=device, dtype=torch.float32)
        if getattr(config, "compose", None) == "fusion":  # no adapter of its own: the fusion layer is what trains
            self.bottleneck_fusion[adapter_name] = Fusion(self.dim, config.fusion_temperature).to(device=device)
            self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
            return
        m = config.size_for(self.dim)
        self.bottleneck_down[adapter_name] = nn.Linear(self.dim, m)
        self.bottleneck_up[adapter_name] = nn.Linear(m, self.dim)
        if config.layer_norm:
            self.bottleneck_ln[adapter_name] = nn.LayerNorm(self.dim)
        self.bottleneck_act[adapter_name] = ACT2FN[config.activation]
        self.bottleneck_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.bottleneck_scaling[adapter_name] = config.scaling
        if config.init_weights == "bert":
            for lin in (self.bottleneck_down[adapter_name], self.bottleneck_up[adapter_name]):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        elif config.init_weights:
            # Down keeps nn.Linear's default init; a zero up-projection makes the adapter the identity at start.
            nn.init.zeros_(self.bottleneck_up[adapter_name].weight)
            nn.init.zeros_(self.bottleneck_up[adapter_name].bias)
        else:
            nn.init.normal_(self.bottleneck_up[adapter_name].weight, std=0.02)
        for d in (self.bottleneck_down, self.bottleneck_up, self.bottleneck_ln):
            if adapter_name in d:
                d[adapter_name] = d[adapter_name].to(device=device, dtype=torch.float32)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _base_device(self) -> Optional[torch.device]:
        for p in self.get_base_layer().parameters():
            return p.device
        return None

    def _own(self, name: str, h: torch.Tensor) -> torch.Tensor:
        ln = self.bottleneck_ln[name] if name in self.bottleneck_ln else None
        return adapter_delta(
            h,
            self.bottleneck_down[name],
            self.bottleneck_up[name],
            ln,
            self.bottleneck_act[name],
            self.bottleneck_dropout[name],
            self.bottleneck_scaling[name],
        )

    def _delta(self, name: str, h: torch.Tensor) -> torch.Tensor:
        if name in self.bottleneck_fusion:
            return self.bottleneck_fusion[name](h, [s(h) for s in self.bottleneck_sources[name]])
        if name in self.bottleneck_sources:  # stack: each source reads the output of the one below, ours the top's
            u = h
            for source in self.bottleneck_sources[name]:
                u = u + source(u)
            return u - h + self._own(name, u)
        return self._own(name, h)

    def _has(self, name: str) -> bool:
        return name in self.bottleneck_down or name in self.bottleneck_fusion

    def _active(self) -> list[str]:
        if self.disable_adapters:
            return []
        return [a for a in self.active_adapters if self._has(a)]

    def _rowwise(self, names: list[str]):
        """Each row's own adapter (PEFT's `adapter_names`: one adapter per row of a mixed batch, `__base__` none);
        rows grouped by adapter (the pool sorts them) make each adapter's rows one slice."""
        spans = row_spans(names)

        def delta(h: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(h)
            for name, start, end in spans:
                if self._has(name):
                    out[start:end] = self._delta(name, h[start:end])
            return out

        return delta

    def forward(self, *args, adapter_names: Optional[list[str]] = None, **kwargs):
        if adapter_names is not None and not self.disable_adapters:
            return self._with_delta(self._rowwise(adapter_names), args, kwargs)
        active = self._active()
        if not active:
            return self.base_layer(*args, **kwargs)
        return self._with_delta(lambda h: sum(self._delta(name, h) for name in active), args, kwargs)

    def _with_delta(self, delta, args, kwargs):
        """The wrapped block with the adapters' `delta(h)` added where the placement puts it."""
        if self.post_norm:
            blk = self.base_layer
            hidden, residual = args[0], args[1] if len(args) > 1 else kwargs["input_tensor"]
            h = blk.dropout(blk.dense(hidden)) + residual
            return blk.LayerNorm(h + delta(blk.LayerNorm(h)))
        if not self.parallel:
            y = self.base_layer(*args, **kwargs)
            return y + delta(y)
        if self.residual_inside:
            hidden, residual, *rest = args
            return self.base_layer(hidden, residual + delta(residual), *rest, **kwargs)
        return self.base_layer(*args, **kwargs) + delta(args[0])

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise ValueError("bottleneck adapters are not mergeable: they add a non-linear module to the network")

    def unmerge(self) -> None:
        pass

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()
