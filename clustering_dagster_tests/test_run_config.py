import pytest

from clustering_dagster.core.config.run_config import load_run_configs
from clustering_dagster.core.errors import InputError

from .support.paths import SHIPPED_CONFIGS


def test_shipped_configs_load_with_defaults_filled_in():
    configs = load_run_configs(SHIPPED_CONFIGS)
    assert {"default", "kmeans"} <= set(configs)
    default = configs["default"]
    assert [level.name for level in default.levels] == ["fine"]
    assert default.upper_levels.top_clusters == 10  # merged levels above, as many as needed
    assert configs["kmeans"].embedding == default.embedding
    assert default.params()["projection"]["n_components"] == 5


def test_params_hash_is_stable_and_follows_every_parameter(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "a: {levels: [{name: fine, min_cluster_size: 10}]}\n"
        "b: {levels: [{name: fine, min_cluster_size: 11}]}\n"
        "c: {levels: [{name: fine, min_cluster_size: 10}]}\n"
    )
    configs = load_run_configs(path)
    assert configs["a"].params_hash() != configs["b"].params_hash()
    assert configs["a"].params()["levels"] == configs["c"].params()["levels"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: {levels: []}", r"c\.yaml, line 1: run configuration 'x' is invalid"),
        ("x: {levels: [{name: a, method: kmeans}]}", "method kmeans needs k"),
        ("x: {levels: [{name: a}], embeding: {}}", "embeding"),
        ("x: {levels: [{name: a}, {name: a}]}", "level names must be unique"),
        ("x: {levels: [{name: a}], levels: []}", "key 'levels' is given twice"),
        ("x: [1, 2]", "expected a mapping of parameters"),
    ],
)
def test_an_invalid_entry_is_a_clear_error_and_spares_the_others(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\nok: {levels: [{name: fine}]}\n")
    configs = load_run_configs(path)
    assert list(configs) == ["ok"] and configs.partition_names() == ["ok", "x"]
    with pytest.raises(InputError, match=message):
        configs["x"]


def test_a_name_given_twice_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "a: {levels: [{name: x}]}\nb: {levels: [{name: x}]}\na: {levels: [{name: y}]}\n"
    )
    configs = load_run_configs(path)
    assert list(configs) == ["b"]
    with pytest.raises(
        InputError, match=r"line 3: run configuration 'a' is defined twice \(first at line 1\)"
    ):
        configs["a"]


def test_a_name_that_cannot_be_a_partition_key_is_reported_not_offered(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bad|name: {levels: [{name: x}]}\nok: {levels: [{name: x}]}\n")
    configs = load_run_configs(path)
    assert configs.partition_names() == ["ok"]
    assert "'bad|name': a name may hold only letters, digits" in configs.errors["bad|name"]


@pytest.mark.parametrize(
    ("text", "message"), [("- not a mapping", "expected a mapping"), ("a: [", "not valid YAML")]
)
def test_a_file_that_is_no_mapping_of_configurations_is_an_error(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_run_configs(path)
