"""Early exits on a trained digits teacher: latency measured with exits live, thresholds changed
without retraining, and the shipped runner agreeing with torch."""

import numpy as np
import pytest
import torch

from slimsearch.config import SearchConfig
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.evaluators.exit_deploy import export_early_exit
from slimsearch.evaluators.exit_runner import EarlyExitRunner
from slimsearch.evaluators.train import fit, teacher_logits
from slimsearch.config import default_cache_dir
from slimsearch.search.trial import TrialContext
from slimsearch.spaces import Candidate
from slimsearch.tasks import create_task
from slimsearch.techniques import build_student
from slimsearch.techniques.exits import exit_outcomes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    task = create_task("digits")
    logits = teacher_logits(task.teacher, task.train.tensors[0], cache_dir=default_cache_dir() / "logits")
    candidate = Candidate({"exits": {"criterion": "max_prob", "stage1": 0.7, "stage2": "off"}})
    student = build_student(candidate, task.teacher, task.example_input)
    fit(student, task.train, epochs=3, lr=2e-3, teacher_logits=logits, temperature=2.0, alpha=0.3, seed=0)
    return task, student.eval(), tmp_path_factory.mktemp("exits")


def measure(task, student, workdir, *, lower_bound: bool = False):
    """The student against the teacher, as a trial times them (150 samples, 30 calls in 3 rounds)."""
    config = SearchConfig.from_mapping({"task": "digits", "latency_budget": "1x", "latency": {
        "warmup": 5, "repeats": 30, "rounds": 3, "exit_samples": 150}})
    context = TrialContext.create(config, task, None, workdir)
    try:
        return context.measure(student, workdir, lower_bound=lower_bound)
    finally:
        context.close()


def test_an_exit_taking_most_samples_lowers_mean_latency_at_the_same_accuracy(trained):
    task, student, workdir = trained
    # The teacher is the same network without exits, timed in the same window on the same samples.
    paired, shares = measure(task, student, workdir)
    student_accuracy, teacher_accuracy = accuracy(student, task.val), accuracy(task.teacher, task.val)
    print(f"exits live: {student_accuracy:.2%} val, mean {paired.student.mean_ms:.3f} ms (p90 "
          f"{paired.student.p90_ms:.3f}) vs teacher {teacher_accuracy:.2%}, {paired.teacher.mean_ms:.3f} ms; "
          f"leaving at {shares}")
    assert shares["stage1"] > 0.5, "the first exit should take most (easy) samples"
    assert paired.student.statistic == "mean" and paired.student.p90_ms >= paired.student.median_ms
    assert paired.student.value_ms < paired.teacher.value_ms
    assert student_accuracy >= teacher_accuracy - 0.01


def test_a_lower_bound_is_timed_on_as_few_samples_as_a_fixed_measurement_makes_calls(trained):
    task, student, workdir = trained
    bound, shares = measure(task, student, workdir, lower_bound=True)
    # Every sample leaves at the first exit, so each takes the same path: 30 / 3 samples, not 150.
    assert shares["stage1"] == 1.0
    assert bound.student.samples == bound.teacher.samples == 10
    assert bound.student.value_ms < bound.teacher.value_ms


@torch.no_grad()
def test_thresholds_change_without_retraining_and_the_runner_agrees(trained):
    task, student, workdir = trained
    inputs = task.val.tensors[0][:200]
    export_early_exit(student, task.example_input, workdir / "runner-check")
    all_logits = student.exit_logits(inputs)  # computed once: each threshold is re-scored from these
    shares = []
    for threshold in (0.5, 0.8, 0.95, 1.01):
        _, exits = exit_outcomes(all_logits, [threshold], student.criterion)
        runner_logits, runner_exits = EarlyExitRunner(workdir / "runner-check", thresholds=[threshold]).predict(inputs.numpy())
        assert (runner_exits == exits.numpy()).mean() >= 0.99
        shares.append(float((exits == 0).float().mean()))
    assert shares == sorted(shares, reverse=True) and shares[0] > shares[2] and shares[-1] == 0.0
    np.testing.assert_array_equal(runner_logits.argmax(1), all_logits[-1].argmax(1).numpy())
