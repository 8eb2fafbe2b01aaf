"""Names of what a trial records about itself (Optuna user attrs), in a module of their own with
no imports, so that storage, heartbeats, trials and reports share them without importing each other.
Where a candidate came from has its own such module: search/origins.py.
"""

FAIL_REASON_ATTR = "fail_reason"  # a failed trial: why it failed
FIRST_LATENCY_ATTR = "first_latency_ratio"  # the candidate's latency before fine-tuning, over the teacher's
# Trials record their latency constraint themselves (`trial.set_constraint`, <= 0 is feasible);
# constraint-aware samplers (NSGA-II, TPE) read it from there and prefer feasible trials.
CONSTRAINT_NAME = "latency"
FULL_EVALUATION_ATTR = "full_evaluation"  # study attr: {trial number: {"val_accuracy", "test_accuracy"}}
