"""What a run leaves for people: report.md with the table, plots, levels, settings and versions;
progress bars on a terminal only."""

import pytest
import yaml

from evopress.cli.main import main
from evopress.eval.metrics import perplexity
from evopress.report import markdown_report

SMALL = ["--device", "cpu", "--calibration-tokens", "4096", "--heldout-tokens", "4096", "--generations", "2",
         "--offspring", "4", "--stages", "2:512,1:1024", "--initial", "4", "--initial-tokens", "512",
         "--random-samples", "4"]


def test_markdown_report_holds_every_section():
    plans = {"EvoPress": {"levels": {"a": "drop", "b": "keep"}}, "random": {"levels": {"a": "keep", "b": "drop"}}}
    rows = [{"method": "EvoPress", "ppl": 1.5}, {"method": "random", "ppl": 2.25}]
    text = markdown_report("t", [rows, [("method", "method"), ("ppl", "held-out ppl")]], ["profile.png"], plans,
                           ["a", "b"], {"Target": "drop 1", "Versions": {"torch": "2.13"}})
    assert "| EvoPress | 1.5 |" in text and "| a | drop | keep |" in text and "![profile](profile.png)" in text
    assert "## Target\n\ndrop 1" in text
    assert yaml.safe_load(text.split("## Versions")[1].split("```yaml")[1].split("```")[0]) == {"torch": "2.13"}


@pytest.mark.slow
def test_a_run_writes_a_shareable_report(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["drop", "--run-dir", str(run_dir), *SMALL]) == 0
    text = (run_dir / "report.md").read_text()
    summary = (run_dir / "summary.txt").read_text()
    for name in ("EvoPress", "ShortGPT", "random best-of-4"):
        assert f"| {name} |" in text and name in summary
    for heading in ("Per-unit levels", "Settings (config.yaml)", "Data and evaluation protocol", "Versions", "Export"):
        assert f"## {heading}" in text
    for image in ("profile.png", "convergence.png"):
        assert f"]({image})" in text and (run_dir / image).exists()
    settings = yaml.safe_load(text.split("## Settings (config.yaml)")[1].split("```yaml")[1].split("```")[0])
    assert settings == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "transformers:" in text and "torch:" in text


def test_progress_bars_only_where_asked(monkeypatch, capsys):
    import torch

    from evopress.models import load_model
    from evopress.zoo import tiny_model_dir

    model, _ = load_model(str(tiny_model_dir()), dtype="float32", device="cpu")
    tokens = torch.randint(0, model.config.vocab_size, (4, 32))
    monkeypatch.setenv("EVOPRESS_PROGRESS", "1")
    with_bar = perplexity(model, tokens, batch_size=2, progress="held-out ppl")
    assert "held-out ppl" in capsys.readouterr().err
    monkeypatch.delenv("EVOPRESS_PROGRESS")  # capsys's stderr is no terminal: quiet
    assert perplexity(model, tokens, batch_size=2, progress="held-out ppl") == with_bar
    assert "held-out ppl" not in capsys.readouterr().err
