"""The run directory: what training writes (`rundir.py`) and the report built from it (`report.py`)."""

from .report import write_report, write_report_safely
from .rundir import RunWriter, finished

__all__ = ["RunWriter", "finished", "write_report", "write_report_safely"]
