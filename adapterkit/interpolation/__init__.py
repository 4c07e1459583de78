"""Interpolation of adapter weights: mixing several runs' adapters into one (`merge.py`) and scaling one adapter
between the base model and the trained run (`sweep.py`)."""

from .merge import MergeError, merge
from .sweep import SweepError, parse_scales, sweep

__all__ = ["MergeError", "merge", "SweepError", "parse_scales", "sweep"]
