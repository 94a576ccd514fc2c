"""Optuna studies over the block space: study files, a resumable multi-worker runner, a report."""

from ablate.study.files import load_study_file
from ablate.study.space import Objective, Param, StudyDef

__all__ = ["Objective", "Param", "StudyDef", "load_study_file"]
