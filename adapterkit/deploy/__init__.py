"""Deployment artifacts of a trained run, each verified before it is written (`artifacts.py`), in the formats of the
`formats.py` registry."""

from .artifacts import ExportError, export
from .formats import FORMATS, ExportFormat, ExportOptions, register_format

__all__ = ["ExportError", "export", "FORMATS", "ExportFormat", "ExportOptions", "register_format"]
