"""Long fine-tunes: a measured candidate trained again, `finetune.long_factor` times as long.

Every candidate gets the same short fine-tune, which is what lets a search compare many of
them; but it leaves the boldest ones short of what they can reach. Measured on digits (3 and
9 epochs, the same candidates): uniform pruning at 0.8 went from 76.6% to 96.9%, every conv
separable from 82.2% to 99.4% (the teacher's 99.4%, at 4.6x its speed), pruning at 0.85 from
57.7% to 88.9%; on mnist1d pruning at 0.8 went from 88.3% to 98.2%. A person with a grid would
fine-tune the model they picked for longer; the search picks which ones earn it.

The proposer looks at the fine-tuned, feasible candidates not yet given a long fine-tune and
expects each to recover a share of its loss to the teacher (`RECOVERY_PRIOR` at first, then the
median share the long fine-tunes measured so far recovered), at its measured latency and size.
First, the fastest one that would come within a point of the teacher's accuracy if it recovered
as well as the best long fine-tune measured so far (the expected share before any), and would be
clearly faster than every measured model that did (`NEAR_TEACHER`, `SPEED_MARGIN`); before any
is measured, the fastest one that could if it recovered all its loss (`LONG_SHOT_LOSS`); else the
one whose expected point adds most hypervolume to the front; and it passes when none adds
`long_factor` times what a trial must (Knowledge.worth_a_trial): it costs that many trials.
A search bounded by time (`deadline`) starts none expected to run past its end (factor times the
candidate's own trial). The trial's parameters are the
candidate's own; its `finetune_scale` user attr carries the factor (search/trial.py) and its
`predicted` attr what was expected, so the report reads the two side by side.
"""

from __future__ import annotations

import time

import numpy as np

from slimsearch.search.origins import LONG_FINETUNE
from slimsearch.search.proposals.base import History, Proposal, Proposer, Record
from slimsearch.search.proposals.knowledge import Knowledge

# The share of its accuracy loss a candidate is expected to recover before any long fine-tune
# was measured (3 against 9 epochs: eight candidates on digits and mnist1d won back 75-100%,
# median 87%; a little below that), and how many measurements that prior counts as.
RECOVERY_PRIOR = 0.75
PRIOR_COUNT = 2
# The model people pick by: the fastest within a point of the teacher's accuracy. The front's
# hypervolume, linear in the loss, gives little for taking a model from 1.1 points below the
# teacher to 0.3 (resnet18: uniform pruning at 0.8 in float, 15.7x the teacher's speed at 97.8%
# against 99.2%, was worth 3.8% of the front, below what a long trial must add), so a long
# fine-tune expected to make a model the fastest near the teacher, by SPEED_MARGIN, is proposed
# first.
NEAR_TEACHER = 0.01
SPEED_MARGIN = 0.95
# Before any long fine-tune of this search is measured, the prior alone decides, and a bold
# model needing more than RECOVERY_PRIOR of its loss back is never tried: on digits the warm
# start's 0.8-pruned float model (76.6% after the short fine-tune, 5.2x the teacher's speed) needs
# 96%, reached 98.9% in its long one (97%), and was tried in some seeds only, whenever nothing
# else in the front made it worth the hypervolume. So the first long fine-tune of a search is a
# long shot: the fastest model that winning back all its loss would bring within a point of the
# teacher, faster than every measured one there, if it lost no more than LONG_SHOT_LOSS (the
# offline runs above: from 57.7% none came within a point). What it wins back then informs the rest.
LONG_SHOT_LOSS = 0.25


class LongFinetuneProposer(Proposer):
    origin = LONG_FINETUNE

    def __init__(self, knowledge: Knowledge, factor: float, deadline: float | None = None):
        self.knowledge = knowledge
        self.factor = factor
        self.deadline = deadline  # the `time.time()` a search bounded by time ends at

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        if self.factor <= 1.0:
            return None
        knowledge = self.knowledge
        choices = self._in_time(self.choices(history), history)
        if not choices:
            return None
        recovery = self.recovery(history)
        teacher = knowledge.teacher_accuracy
        loss = np.array([max(teacher - r.accuracy, 0.0) for r in choices])
        accuracy = np.array([r.accuracy for r in choices])
        expected = accuracy + recovery * loss
        points = knowledge.objectives(expected, [r.latency_ratio for r in choices], [r.size_bytes for r in choices])
        latency = np.array([r.latency_ratio for r in choices])
        # Whether a model could become the one people pick is judged on the best recovery measured
        # (optimism where a long fine-tune is the only way there); what it adds, on the typical one.
        # On digits, after one won back all its loss, the warm start's 0.8-pruned float model (5.2x
        # the teacher's speed at 91.4%) was expected at 98.1% on the typical share, a point and a
        # third short, and never tried; the same model in another seed went to 98.9% in its long one.
        shares = self.recovered_shares(history)
        best_case = accuracy + max([recovery, *shares]) * loss
        beats_fastest = latency < self._fastest_near_teacher(history) * SPEED_MARGIN
        faster = (best_case >= teacher - NEAR_TEACHER) & beats_fastest
        long_shot = beats_fastest & (loss <= LONG_SHOT_LOSS) if not shares else np.zeros(len(choices), dtype=bool)
        # A trial `factor` times as long must add `factor` times what a trial must.
        gains = knowledge.expected_gains(history, points, rng) / self.factor
        if faster.any() or long_shot.any():
            best = int(np.argmin(np.where(faster if faster.any() else long_shot, latency, np.inf)))
        elif knowledge.worth_a_trial(gains).any():
            best = int(np.argmax(gains))
        else:
            return None
        record = choices[best]
        candidate = knowledge.encoding.decode(record.row[None, :])[0]
        if candidate.key != record.key:  # the encoding cannot say this candidate again exactly
            return None
        predicted = {"accuracy": float(expected[best]), "latency_ratio": float(record.latency_ratio),
                     "size_bytes": float(record.size_bytes), "extends": float(record.number),
                     "recovery": float(recovery)}
        return Proposal(candidate, LONG_FINETUNE, predicted=predicted, finetune_scale=float(self.factor))

    def _in_time(self, choices: list[Record], history: History) -> list[Record]:
        """The choices whose long fine-tune would end before a time-bounded search does: `factor`
        times the candidate's own trial (its median standard trial's when not timed). In 90 s
        searches of mnist1d one started 65 s in ran 49 s, its model never counted; and a rule on
        the median trial (8 s, quantized ones) kept the warm start's 0.8-pruned float model, whose
        trial took 4 s, from a long fine-tune in every run, although 20 s of the 30 s left would do."""
        if self.deadline is None:
            return choices
        durations = [r.seconds for r in history.fine_tuned() if r.finetune_scale == 1.0 and r.seconds]
        typical = float(np.median(durations)) if durations else 0.0
        left = self.deadline - time.time()
        return [r for r in choices if self.factor * (r.seconds or typical) <= left]

    def _fastest_near_teacher(self, history: History) -> float:
        """The latency ratio of the fastest feasible model measured within NEAR_TEACHER of the teacher."""
        floor = self.knowledge.teacher_accuracy - NEAR_TEACHER
        return min([r.latency_ratio for r in history.fine_tuned() if r.feasible and r.latency_ratio and r.accuracy >= floor],
                   default=np.inf)

    def choices(self, history: History) -> list[Record]:
        """Fine-tuned (the configured length), feasible, measured, short of the teacher, and not
        given a long fine-tune yet (in any state: a running or lost one counts)."""
        extended = {r.key for r in history.records if r.finetune_scale != 1.0 and r.key is not None}
        teacher = self.knowledge.teacher_accuracy
        return [r for r in history.fine_tuned()
                if r.finetune_scale == 1.0 and r.feasible and r.latency_ratio and r.size_bytes
                and r.accuracy < teacher and r.key not in extended]

    def recovered_shares(self, history: History) -> list[float]:
        """For each long fine-tune measured so far, the share of its short fine-tune's loss to the teacher it won back."""
        teacher = self.knowledge.teacher_accuracy
        short = {r.key: r.accuracy for r in history.fine_tuned() if r.finetune_scale == 1.0}
        return [min(max((r.accuracy - short[r.key]) / (teacher - short[r.key]), 0.0), 1.0)
                for r in history.fine_tuned()
                if r.finetune_scale != 1.0 and short.get(r.key) is not None and short[r.key] < teacher]

    def recovery(self, history: History) -> float:
        """The share of its loss to the teacher a long fine-tune is expected to win back: the
        prior, pulled towards the median of what the long fine-tunes so far won back."""
        shares = self.recovered_shares(history)
        if not shares:
            return RECOVERY_PRIOR
        count = len(shares)
        return float((RECOVERY_PRIOR * PRIOR_COUNT + np.median(shares) * count) / (PRIOR_COUNT + count))
