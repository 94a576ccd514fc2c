"""Export the winner of an ablation or study, and predict with it.

- :mod:`~core.export.select` chooses the run (from MLflow alone);
- :mod:`~core.export.evidence` checks that an ablation's winner beats its runner-up, by seed;
- :mod:`~core.export.formats` writes ``.keras``, SavedModel and TFLite;
- :mod:`~core.export.check` reloads every format and compares it with the trained model;
- :mod:`~core.export.publish` logs the MLflow pyfunc and moves the ``champion`` alias;
- :mod:`~core.export.card` writes ``model_card.md`` and ``preprocessing.json``;
- :mod:`~core.export.exporter` runs the whole export (:func:`export_model`);
- :mod:`~core.export.predict` streams predictions into ``.npz``, submission CSV and PNGs.

``pyfunc_model.py`` is not imported here: MLflow copies it into the logged model and runs it
there, without this project.
"""

from core.export.exporter import ExportResult, export_model
from core.export.formats import ExportError
from core.export.predict import PredictResult, load_predictor, predict_file
from core.export.select import Choice, Selector, select

__all__ = [
    "Choice",
    "ExportError",
    "ExportResult",
    "PredictResult",
    "Selector",
    "export_model",
    "load_predictor",
    "predict_file",
    "select",
]
