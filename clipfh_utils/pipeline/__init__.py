"""Running the workbook: the run context (`open_run`), stages as data (experiments resolved from a
profile, trained or loaded, evaluated, recorded), finished runs as models (`load_run`), and the
papermill runner."""
from .context import Run, open_run
from .experiments import Experiment, ExperimentResult, resolve_experiments, run_experiment
from .trained import TrainedModel, load_run

__all__ = ["Experiment", "ExperimentResult", "Run", "TrainedModel", "load_run", "open_run",
           "resolve_experiments", "run_experiment"]
