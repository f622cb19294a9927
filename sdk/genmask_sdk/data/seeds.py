"""Seeds of the procedural scenes each job draws from, kept apart so no job sees another's scenes:
training uses seed 0 (validation 1), build-time INT8 calibration ``CALIB_SEED`` and the build's
fidelity checks ``CHECK_SEED`` (both families), held-out evaluation 10 000."""

CALIB_SEED = 5000
CHECK_SEED = 5001
