import pytest

from clustering_dagster.core.errors import InputError
from clustering_dagster.core.run_config import load_run_configs

from .conftest import SHIPPED_CONFIGS


def test_shipped_configs_load_with_defaults_filled_in():
    configs = load_run_configs(SHIPPED_CONFIGS)
    assert {"default", "kmeans"} <= set(configs)
    default = configs["default"]
    assert [level.name for level in default.levels] == ["coarse", "medium", "fine"]
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
        ("x: {levels: []}", "run configuration 'x' is invalid"),
        ("x: {levels: [{name: a, method: kmeans}]}", "method kmeans needs k"),
        ("x: {levels: [{name: a}], embeding: {}}", "embeding"),
        ("x: {levels: [{name: a}, {name: a}]}", "level names must be unique"),
        ("- not a mapping", "expected a mapping"),
    ],
)
def test_invalid_configs_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_run_configs(path)
