"""Deployment artifacts of a trained run, each verified before it is written (`artifacts.py`)."""
from .artifacts import ExportError, export

__all__ = ["ExportError", "export"]
