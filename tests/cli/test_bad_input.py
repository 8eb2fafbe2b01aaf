"""Bad input: one clear line naming the bad value and what is allowed, exit code 2, no traceback."""

import pytest

from tests.conftest import slimsearch_cli, write_toml


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--task", "cifar99"], ["'cifar99'", "digits", "mnist1d", "torchvision:<model>"]),
    (["--task", "torchvision:resnet19"], ["resnet19", "resnet18"]),
    (["--latency-budget", "fast"], ["'fast'", "'1.5ms'", "'0.5x'"]),
    (["--latency-budget", "-1ms"], ["'-1ms'", "'1.5ms'", "'0.5x'"]),
    (["--sampler", "grid"], ["sampler='grid'", "'nsga2'"]),
    (["--granularity", "block"], ["granularity='block'", "'layer'"]),
])
def test_bad_flags(args, fragments, tmp_path):
    _assert_one_line_error(slimsearch_cli("run", "--runs-dir", str(tmp_path), *args), *fragments)


def test_unknown_config_key(tmp_path):
    config = write_toml(tmp_path / "search.toml", {"task": "digits", "trails": 3})
    _assert_one_line_error(slimsearch_cli("run", str(config)), "unknown key 'trails'", "trials")


def test_missing_config_file(tmp_path):
    _assert_one_line_error(slimsearch_cli("run", str(tmp_path / "nope.toml")), "nope.toml", "does not exist")


def test_budget_no_candidate_can_meet_is_refused_before_any_trial(tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", {**tiny_settings, "latency_budget": "0.01x"})
    result = slimsearch_cli("run", str(config))
    _assert_one_line_error(result, "0.01x", "cannot be met", "most compressed candidate", "allowed: a budget above")
    assert not (tmp_path / "runs" / "tiny" / "study.db").exists() or "trial" not in result.stderr


def test_front_of_a_folder_that_is_not_a_run(tmp_path):
    _assert_one_line_error(slimsearch_cli("front", str(tmp_path)), str(tmp_path), "not a slimsearch run folder")


@pytest.mark.parametrize("space, fragments", [
    ({"bits": [8, 3]}, ["bits=3", "32, 16, 8, 4, 2"]),
    ({"pin_float": ["stem.0", "classifier"]}, ["'classifier'", "not a module of this model", "'stem.0'"]),
])
def test_bad_quantization_settings(space, fragments, tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", {**tiny_settings, "space": space})
    _assert_one_line_error(slimsearch_cli("run", str(config)), *fragments)
