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
    assert cfg.options.target == 3 and cfg.options.granularity == "block"
    assert cfg.search.stages == ((4, 512), (1, 4096))


@pytest.mark.parametrize("text, message", [
    ("search: {generatons: 5}\n", "unknown key 'generatons'.*known keys: generations"),
    ("modle: x\n", "unknown key 'modle'"),
    ("drop: {granularity: layer}\n", "drop.granularity = 'layer': Input should be 'sublayer' or 'block'"),
    ("search: {offspring: many}\n", "search.offspring = 'many': Input should be a valid integer"),
    ("method: quantize\n", "unknown method 'quantize'; available: drop, quant, gguf, sparsify"),
    ("- a\n- b\n", "mapping"),
    ("drop: {bogus: 1}\n", "unknown key 'bogus' in .*drop; known keys: target, granularity"),
    ("sparsity: {target: 0.5}\n", "section 'sparsity' belongs to method 'sparsify'.*set method: sparsify"),
    ("search: {stages: [[2, 512, 7, 1]]}\n", "stages are survivors:tokens pairs, both whole numbers >= 1"),
    ("search: {stages: [[0, 512]]}\n", "stages are survivors:tokens pairs, both whole numbers >= 1"),
    ("", "is empty; a recipe names at least its method"),
])
def test_bad_recipes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, "search: {bogus: 1}\n"))]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'bogus'" in err and "Traceback" not in err
