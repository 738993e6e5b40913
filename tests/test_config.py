import pytest

from evopress.cli.main import main
from evopress.config import RunConfig, load_recipe
from evopress.errors import RecipeError


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_recipe_maps_onto_the_config(tmp_path):
    cfg = load_recipe(write(tmp_path, "method: drop\ndrop: {target: 3, granularity: block}\n"
                                      "search: {stages: [[4, 512], [1, 4096]]}\n"))
    assert isinstance(cfg, RunConfig)
    assert cfg.drop.target == 3 and cfg.drop.granularity == "block"
    assert cfg.search.stages == ((4, 512), (1, 4096))


@pytest.mark.parametrize("text, message", [
    ("search: {generatons: 5}\n", "unknown key 'generatons'.*known keys: generations"),
    ("modle: x\n", "unknown key 'modle'"),
    ("drop: {granularity: layer}\n", "choose one of sublayer, block"),
    ("search: {offspring: many}\n", "expected int"),
    ("method: quantize\n", "choose one of drop, sparsify"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_recipes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, "search: {bogus: 1}\n"))]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'bogus'" in err and "Traceback" not in err
