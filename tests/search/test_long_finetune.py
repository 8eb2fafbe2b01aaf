"""A long fine-tune in a real search: the same candidate, trained `finetune.long_factor` times as
long, never screened, and recorded as such (search/proposals/long_finetune.py)."""

from slimsearch.config import SearchConfig
from slimsearch.search.fidelity import SCREEN_ATTR
from slimsearch.search.origins import FINETUNE_SCALE_ATTR, LONG_FINETUNE, WARM_START


def test_a_real_search_gives_its_warm_start_point_a_long_fine_tune(tiny_settings):
    import io

    from rich.console import Console

    from slimsearch.search.driver import run_search

    config = SearchConfig.from_mapping({**tiny_settings, "trials": 2, "proposers": ["long_finetune"],
                                        "finetune": {"epochs": 1.0, "screen_epochs": 0.5, "long_factor": 2.0}})
    result = run_search(config, console=Console(file=io.StringIO(), width=200), quiet=True)
    first, second = result.study.get_trials()
    assert first.user_attrs["origin"] == WARM_START and first.state.name == "COMPLETE"
    assert second.user_attrs["origin"] == LONG_FINETUNE, second.user_attrs
    assert second.state.name == "COMPLETE" and second.user_attrs["stopped_early"] is None
    assert second.user_attrs["candidate"] == first.user_attrs["candidate"] and second.params == first.params
    assert second.user_attrs[FINETUNE_SCALE_ATTR] == 2.0
    assert second.user_attrs["finetune_epochs"] == 2 * first.user_attrs["finetune_epochs"]
    assert SCREEN_ATTR not in second.user_attrs  # its candidate was measured: no short rung first
    assert second.user_attrs["predicted"]["extends"] == first.number
    # Both are models of the study: the front and its table hold whichever is better.
    assert set(result.front["trial"]) <= {0, 1} and len(result.front)
