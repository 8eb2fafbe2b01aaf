"""A candidate fine-tunes to the same weights in any study: nothing it draws comes from torch's
global random state, which depends on everything that ran before it in the process."""

import torch
from torch import nn

from slimsearch.config import default_cache_dir
from slimsearch.evaluators.train import fit, teacher_logits
from slimsearch.search.trial import finetune_seed
from slimsearch.spaces import Candidate
from slimsearch.tasks import create_task
from slimsearch.techniques import build_student


def _fine_tuned(candidate, teacher, task, logits, history: int) -> dict:
    torch.manual_seed(history)  # another study: other trials drew other numbers before this one
    torch.rand(history)
    student = build_student(candidate, teacher, task.example_input)
    fit(student, task.train, epochs=0.1, lr=2e-3, teacher_logits=logits, temperature=4.0, alpha=0.5,
        seed=finetune_seed(0, candidate))
    return student.state_dict()


def test_an_early_exit_candidate_fine_tunes_to_the_same_weights_whatever_ran_before():
    task = create_task("digits")
    logits = teacher_logits(task.teacher, task.train.tensors[0], cache_dir=default_cache_dir() / "logits")
    candidate = Candidate({"exits": {"criterion": "max_prob", "stage1": 0.9, "stage2": "off"},
                           "prune": {"stages.1.0.conv1": 0.5}})
    first, second = (_fine_tuned(candidate, task.teacher, task, logits, history) for history in (1, 2))
    assert any(name.endswith("exit_head.fc.weight") for name in first)
    assert first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def test_dropout_draws_from_the_fine_tunes_own_seed():
    task = create_task("digits")
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(24 * 24, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)).eval()
    logits = torch.zeros(len(task.train), 10)
    candidate = Candidate({"distill": {"temperature": 4.0, "alpha": 0.5}})
    first, second = (_fine_tuned(candidate, teacher, task, logits, history) for history in (1, 2))
    assert all(torch.equal(first[name], second[name]) for name in first)
