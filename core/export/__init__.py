"""Export the winner of an ablation or study, and predict with it.

- :mod:`~ablate.export.select` chooses the run (from MLflow alone);
- :mod:`~ablate.export.evidence` checks that an ablation's winner beats its runner-up, by seed;
- :mod:`~ablate.export.formats` writes ``.keras``, SavedModel and TFLite;
- :mod:`~ablate.export.check` reloads every format and compares it with the trained model;
- :mod:`~ablate.export.publish` logs the MLflow pyfunc and moves the ``champion`` alias;
- :mod:`~ablate.export.card` writes ``model_card.md`` and ``preprocessing.json``;
- :mod:`~ablate.export.exporter` runs the whole export (:func:`export_model`);
- :mod:`~ablate.export.predict` streams predictions into ``.npz``, overlays and (Mars only) the submission CSV.

Every step follows the exported run's task (its ``task.json``; runs without one are the Mars
task): input size and channels, classes, colours, ignore label and scored classes.

``pyfunc_model.py`` is not imported here: MLflow copies it into the logged model and runs it
there, without this project.
"""

from ablate.export.exporter import ExportResult, export_model
from ablate.export.formats import ExportError
from ablate.export.loading import TaskPredictor
from ablate.export.predict import PredictResult, load_predictor, predict_file
from ablate.export.select import Choice, Selector, select

__all__ = [
    "Choice",
    "ExportError",
    "ExportResult",
    "PredictResult",
    "Selector",
    "TaskPredictor",
    "export_model",
    "load_predictor",
    "predict_file",
    "select",
]
