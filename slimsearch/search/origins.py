"""Where a trial's candidate came from: the `origin` user attr every trial carries.

Kept in a module of its own, with no imports, so that trials, recovery, reports and the
proposers (search/proposals/) all name origins the same way without importing each other.
"""

ORIGIN_ATTR = "origin"
RETRIED_ORIGIN_ATTR = "retried_origin"  # on a retry: the origin of the trial it repeats

WARM_START = "warm_start"  # what a person would try first (spaces/warm_start.py)
SAMPLER = "sampler"  # Optuna's sampler over the genome (spaces/genome.py) or over every knob
PREDICTOR = "predictor"  # the inner search on the latency and accuracy predictors
ALLOCATION = "allocation"  # bits and ratios spread by sensitivity under a budget (HAQ / AutoQuantize style)
LONG_FINETUNE = "long_finetune"  # a measured candidate fine-tuned again, `finetune.long_factor` times as long
RETRY = "retry"  # a trial lost with its worker, queued again
QUEUED = "queued"  # enqueued by hand (or by the bench's hand baseline) before the search
RANDOM = "random"  # every proposer was out of ideas: Optuna's random sampling

PREDICTED_ATTR = "predicted"  # what the proposer predicted of the candidate: accuracy, latency_ratio, size_bytes
GENOME_ATTR = "genome"  # the sampler's genes (spaces/genome.py) the candidate was decoded from
FINETUNE_SCALE_ATTR = "finetune_scale"  # how many times the configured fine-tune the trial's is (absent: 1)

# What a trial reads of its own attrs before it runs: a Ray node's private copy of the trial gets them too.
TRIAL_INPUT_ATTRS = (ORIGIN_ATTR, RETRIED_ORIGIN_ATTR, FINETUNE_SCALE_ATTR)

ORIGINS = (WARM_START, SAMPLER, PREDICTOR, ALLOCATION, LONG_FINETUNE, RETRY, QUEUED, RANDOM)


def is_warm_start(user_attrs: dict) -> bool:
    """A warm-start point, or a retry of one (both are exempt from multi-fidelity screening)."""
    origin = origin_of(user_attrs)
    return origin == WARM_START or (origin == RETRY and user_attrs.get(RETRIED_ORIGIN_ATTR) == WARM_START)


def proposed_attrs(trial) -> dict:
    """An Optuna trial's user attrs as its storage holds them now: the proposal sampler records
    the origin and a long fine-tune's factor when the trial asks for its candidate, after Optuna
    has cached the trial's attrs (`trial.user_attrs` would not show them)."""
    study = getattr(trial, "study", None)
    if study is None:  # a trial object of Optuna's without a study (FrozenTrial, FixedTrial)
        return trial.user_attrs
    return study._storage.get_trial(trial._trial_id).user_attrs


def finetune_scale(user_attrs: dict) -> float:
    """How many times the configured fine-tune a trial's is (a long fine-tune's factor, else 1)."""
    return float(user_attrs.get(FINETUNE_SCALE_ATTR) or 1.0)


def origin_of(user_attrs: dict) -> str:
    """A trial's origin; studies from before origins were recorded say `warm_start` or nothing."""
    origin = user_attrs.get(ORIGIN_ATTR)
    if origin:
        return str(origin)
    if user_attrs.get("warm_start"):
        return WARM_START
    if user_attrs.get("retry_of") is not None:
        return RETRY
    return SAMPLER
