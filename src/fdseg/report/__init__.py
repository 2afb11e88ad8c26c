"""fdseg.report: self-contained HTML reports of a run and of an experiment (figures embedded as PNG)."""

from __future__ import annotations

from fdseg.report.experiment import compare_to_baseline, write_experiment_report
from fdseg.report.run import write_run_report

__all__ = ["compare_to_baseline", "write_experiment_report", "write_run_report"]
