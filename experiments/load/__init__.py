"""load stage of the Pooch Predictor latency lab: Locust-driven trials measured the way
MLPerf LoadGen, wrk2 and perf_analyzer measure (open loop from scheduled times, closed loop with
its coordinated-omission-corrected twin, stable windows, generator health).

Importing this package never imports Locust or gevent: the load runs in worker processes.
"""

from poochlab.experiments.load.calibration import LOAD_LEVELS, CapacityCalibration, calibrate_capacity
from poochlab.experiments.load.generator_floor import floor_summary, measure_generator_floor
from poochlab.experiments.load.settings import LoadSettings
from poochlab.experiments.load.trial import TrialError, measure_trial
from poochlab.experiments.load.workload import Workload

__all__ = ["LOAD_LEVELS", "CapacityCalibration", "LoadSettings", "TrialError", "Workload", "calibrate_capacity",
           "floor_summary", "measure_generator_floor", "measure_trial"]
