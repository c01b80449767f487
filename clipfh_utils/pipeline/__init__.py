"""Running the workbook: the run context (`open_run`), stages as data (experiments resolved from a
profile, trained or loaded, evaluated, recorded), finished runs as models (`load_run`), and the
papermill runner."""
import warnings

from .context import Invocation, open_run
from .experiments import ExperimentResult, run_experiment
from .resolve import Experiment, resolve_experiments
from .trained import TrainedModel, load_run

__all__ = ["Experiment", "ExperimentResult", "Invocation", "TrainedModel", "load_run", "open_run",
           "resolve_experiments", "run_experiment"]


def __getattr__(name: str):
    """`Run` was the invocation context's old name ("run" now means a trained model's folder)."""
    if name == "Run":
        warnings.warn("clipfh_utils.pipeline.Run is now Invocation", DeprecationWarning, stacklevel=2)
        return Invocation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
