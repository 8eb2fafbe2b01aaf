import pytest

from slimsearch.config import Budget, SearchConfig, load_toml
from slimsearch.errors import ConfigError
from tests.conftest import write_toml


@pytest.mark.parametrize("text, value, relative", [
    ("1.5ms", 1.5, False), ("800us", 0.8, False), ("0.002s", 2.0, False), ("0.5x", 0.5, True), (" 2 ms ", 2.0, False),
])
def test_budget_parses_absolute_and_relative(text, value, relative):
    budget = Budget.parse(text)
    assert budget.value == pytest.approx(value)
    assert budget.relative is relative


@pytest.mark.parametrize("text", ["fast", "-1ms", "0ms", "1.5", "ms", "1.5 hours", ""])
def test_malformed_budget_names_the_value_and_the_allowed_forms(text):
    with pytest.raises(ConfigError) as error:
        Budget.parse(text)
    assert repr(text) in str(error.value)
    assert "'0.5x'" in str(error.value) and "'1.5ms'" in str(error.value)


def test_relative_budget_is_judged_against_the_teacher_of_the_same_window():
    budget = Budget.parse("0.5x")
    assert budget.violation(latency_ms=1.0, teacher_ms=2.0) == pytest.approx(0.0)
    assert budget.violation(latency_ms=1.0, teacher_ms=4.0) < 0
    assert budget.violation(latency_ms=3.0, teacher_ms=4.0) > 0


def test_toml_loads_sections_and_flags_override(tmp_path):
    path = write_toml(tmp_path / "search.toml", {
        "task": "mnist1d", "latency_budget": "1ms", "trials": 7, "target": {"threads": 2}, "space": {"granularity": "stage"},
    })
    config = load_toml(path)
    assert (config.task, config.trials, config.target.threads, config.space.granularity) == ("mnist1d", 7, 2, "stage")
    overridden = SearchConfig.from_mapping({"trials": 3, "target": {"batch_size": 8}}, base=config)
    assert (overridden.trials, overridden.target.threads, overridden.target.batch_size) == (3, 2, 8)


@pytest.mark.parametrize("settings, fragment", [
    ({"tirals": 3}, "unknown key 'tirals'"),
    ({"target": {"runtim": "torch"}}, "unknown key 'target.runtim'"),
    ({"sampler": "cmaes"}, "sampler='cmaes'"),
    ({"trials": 0}, "trials=0"),
    ({"target": {"device": "tpu"}}, "device='tpu'"),
    ({"space": {"granularity": "block"}}, "granularity='block'"),
    ({"space": {"max_prune_ratio": 1.0}}, "max_prune_ratio=1.0"),
    ({"space": {"families": ["prune", "magic"]}}, "families='magic'"),
    ({"storage": "study.db"}, "storage='study.db'"),
    ({"name": "../escape"}, "name='../escape'"),
])
def test_bad_settings_name_the_value(settings, fragment):
    with pytest.raises(ConfigError) as error:
        SearchConfig.from_mapping(settings)
    assert fragment in str(error.value)


def test_unknown_toml_key_lists_the_allowed_keys(tmp_path):
    path = write_toml(tmp_path / "search.toml", {"task": "digits", "budget": "1ms"})
    with pytest.raises(ConfigError) as error:
        load_toml(path)
    assert "unknown key 'budget'" in str(error.value) and "latency_budget" in str(error.value)


@pytest.mark.parametrize("settings, fragment", [
    ({"target": {"runtime": "cudagraph"}}, "target.runtime='cudagraph' runs on CUDA GPUs only, but got device='cpu'; "
                                          "allowed on device='cpu': runtime 'onnxruntime', 'torch', 'torch-compile'"),
    ({"target": {"runtime": "onnxruntime-tensorrt"}}, "target.runtime='onnxruntime-tensorrt' runs on CUDA GPUs only"),
    ({"space": {"precisions": ["float32", "float16"]}}, "space.precisions holds 'float16', which runs on device='cuda' "
                                                        "with runtime 'torch', 'torch-compile', 'cudagraph' only"),
    ({"target": {"device": "cuda", "runtime": "onnxruntime"}, "space": {"precisions": ["bfloat16"]}},
     "but the target is runtime='onnxruntime' on device='cuda'; allowed here: precisions=['float32']"),
    ({"space": {"precisions": ["float8"]}}, "space.precisions must be one of 'float32', 'float16', 'bfloat16'"),
    ({"space": {"precisions": []}}, "space.precisions must list distinct precisions"),
    ({"finetune": {"device": "gpu"}}, "finetune.device must be one of 'auto', 'cpu', 'cuda', but got device='gpu'"),
    ({"finetune": {"autocast": "yes"}}, "finetune.autocast must be true or false"),
])
def test_gpu_only_settings_on_a_cpu_target_are_refused_with_what_is_allowed(settings, fragment):
    with pytest.raises(ConfigError) as error:
        SearchConfig.from_mapping(settings)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_half_precision_is_searched_by_default_on_gpu_torch_targets_only():
    from slimsearch.config import TargetConfig

    cpu, gpu_space = SearchConfig(), SearchConfig.from_mapping({"target": {"device": "cuda", "runtime": "torch-compile"}})
    assert cpu.space.searched_precisions(cpu.target) == ("float32",)
    assert gpu_space.space.searched_precisions(gpu_space.target) == ("float32", "float16", "bfloat16")
    chosen = SearchConfig.from_mapping({"target": {"device": "cuda", "runtime": "cudagraph"},
                                        "space": {"precisions": ["float16"]}})
    assert chosen.space.searched_precisions(chosen.target) == ("float16",)
    assert not TargetConfig(device="cuda", runtime="onnxruntime").runs_half
