"""Child process of the kill -9 test (tests/test_faults.py): trains the FAST demo experiment into
the folder given on the command line, pausing after each checkpoint so the parent can kill it
between two epochs. Not a test module itself."""
import sys
import time

from clipfh_utils.pipeline import open_run
from clipfh_utils.training import loop

from .test_runs import FAST

real_save = loop.save_checkpoint


def slow_save(path, state):
    real_save(path, state)
    if path.name == loop.Trainer.CHECKPOINT and state["phase"] == "finetune":
        time.sleep(120)  # the window in which the parent kills this process


if __name__ == "__main__":
    loop.save_checkpoint = slow_save
    open_run("demo", sys.argv[1], FAST).run_stage("stage2", progress=False)
