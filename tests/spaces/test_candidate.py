import json

import pytest

from slimsearch.errors import ConfigError
from slimsearch.spaces import CANDIDATE_VERSION, Candidate


def test_candidate_round_trips_through_json_and_is_hashable():
    candidate = Candidate({"prune": {"layer1.conv": 0.25}, "distill": {"temperature": 4.0, "alpha": 0.5}})
    again = Candidate.from_json(candidate.to_json())
    assert again == candidate and hash(again) == hash(candidate) and again.key == candidate.key
    assert json.loads(candidate.to_json())["version"] == CANDIDATE_VERSION
    assert {candidate, again} == {candidate}


def test_candidate_is_immutable_from_outside():
    choices = {"prune": {"a": 0.5}}
    candidate = Candidate(choices)
    choices["prune"]["a"] = 0.9
    candidate.family("prune")["a"] = 0.1
    assert candidate.family("prune") == {"a": 0.5}


def test_candidate_of_another_version_is_refused():
    with pytest.raises(ConfigError, match="version=99"):
        Candidate.from_dict({"version": 99, "choices": {}})
