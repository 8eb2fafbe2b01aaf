"""Multi-fidelity: the low-rung front decides who trains on, and a promoted fine-tune is the full one."""

import optuna
import torch
from torch import nn
from torch.utils.data import TensorDataset

from slimsearch.evaluators.train import fit
from slimsearch.search.fidelity import SCREEN_ATTR, RungPoint, promote


def test_a_point_is_promoted_only_when_nothing_at_its_rung_beats_it_everywhere():
    fast_small = RungPoint(accuracy=0.90, latency=0.3, size_bytes=100)
    accurate = RungPoint(accuracy=0.97, latency=0.6, size_bytes=400)
    assert promote(RungPoint(0.95, 0.4, 200), [fast_small, accurate])  # between the two: on the front
    assert not promote(RungPoint(0.89, 0.35, 150), [fast_small, accurate])  # worse than fast_small in all three
    assert promote(RungPoint(0.89, 0.29, 150), [fast_small, accurate])  # faster than anything seen
    assert promote(fast_small, [fast_small])  # an equal point does not dominate
    assert promote(accurate, [])


def _data(n=96):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 8, generator=generator)
    return TensorDataset(inputs, (inputs[:, 0] > 0).long())


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def test_a_promoted_fine_tune_ends_exactly_where_an_unscreened_one_does():
    plain = fit(_net(), _data(), epochs=3, lr=1e-2, batch_size=16, seed=3)
    seen = []
    screened = fit(_net(), _data(), epochs=3, lr=1e-2, batch_size=16, seed=3, checkpoint=1.0,
                   on_checkpoint=lambda model: seen.append(model.training) or True)
    assert seen == [False]  # called once, in eval mode
    for a, b in zip(plain.state_dict().values(), screened.state_dict().values()):
        assert torch.equal(a, b)


def test_a_screened_out_fine_tune_stops_at_the_checkpoint():
    steps = []
    fit(_net(), _data(), epochs=3, lr=1e-2, batch_size=16, seed=3, on_step=lambda: steps.append(1),
        checkpoint=1.0, on_checkpoint=lambda model: False)
    assert len(steps) == 6  # 96 samples / 16 per batch = one epoch


def test_screening_and_the_time_budget_in_a_real_search(tiny_settings):
    """Every fine-tuned trial went through the low rung; each one screened out was beaten there.
    And the time budget, not the trial count, ended the search, with nothing left running."""
    import io
    import time

    from rich.console import Console

    from slimsearch.config import SearchConfig
    from slimsearch.search.driver import run_search

    config = SearchConfig.from_mapping({**tiny_settings, "trials": 200, "warm_start": False, "sampler": "random",
                                        "proposers": ["sampler"], "parametrisation": "layer",
                                        "latency_budget": "0.9x", "time_budget": "25s",
                                        "finetune": {"epochs": 1.0, "screen_epochs": 0.5}})
    log = io.StringIO()
    started = time.perf_counter()
    result = run_search(config, console=Console(file=log, width=200), quiet=True)
    elapsed = time.perf_counter() - started
    trials = result.study.get_trials()
    assert {t.state.name for t in trials} <= {"COMPLETE", "FAIL"}
    assert 0 < len(trials) < 200 and "Time budget of 25 s used up" in log.getvalue()
    assert elapsed < 25 + 20, f"the search ran {elapsed:.0f} s past a 25 s budget"  # at most one trial past it

    trials = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    screened = [t for t in trials if SCREEN_ATTR in t.user_attrs]
    assert screened, "no trial reached the fine-tune"
    for trial in screened:
        rung = trial.user_attrs[SCREEN_ATTR]
        point = RungPoint(rung["accuracy"], rung["latency"], rung["size_bytes"])
        earlier = [RungPoint(**{k: t.user_attrs[SCREEN_ATTR][k] for k in ("accuracy", "latency", "size_bytes")})
                   for t in screened if t.number < trial.number]
        assert rung["promoted"] == promote(point, earlier)
        if rung["promoted"]:
            assert trial.user_attrs["stopped_early"] is None and "weights_artifact" in trial.user_attrs
        else:
            assert trial.user_attrs["stopped_early"].startswith("multi-fidelity")
            assert trial.values[0] == rung["accuracy"] and "weights_artifact" not in trial.user_attrs
    assert set(result.front["trial"]) <= {t.number for t in screened if t.user_attrs[SCREEN_ATTR]["promoted"]}

    # The benchmark's figures for this run: what `make bench` reports, on a search small enough to check.
    figures, _ = _bench().run_figures(result.study, elapsed)
    eligible = result.front  # the front is within the eligible trials, so they are not empty
    assert figures["full_finetunes"] >= len(eligible) > 0 and figures["trials"] == len(result.study.get_trials())
    assert figures["hypervolume"] >= 0 and 0 <= figures["overhead_share"] < 1
    # The most accurate model under a latency bound is on the front (whatever beats it is under the bound too).
    under = eligible[1 / eligible["speedup"] <= 0.75]
    if len(under):
        assert figures["best_acc_loose_budget"] == under["accuracy"].max()


def _bench():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("search_quality", REPO / "bench" / "search_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

