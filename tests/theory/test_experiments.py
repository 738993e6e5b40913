"""Each experiment (a)–(f) at its reduced size checks its qualitative claim; the CLI writes its files."""

import argparse
import json

import pytest

from evopress.cli import theory as cli
from evopress.theory.experiments import EXPERIMENTS


@pytest.fixture(scope="module")
def reports():
    return {name: module.run(**module.QUICK) for name, module in EXPERIMENTS.items()}


def test_every_claim_holds_at_the_reduced_size(reports):
    failed = {name: [c for c, ok in r.checks.items() if not ok] for name, r in reports.items()}
    assert not any(failed.values()), failed


def test_a_sdbv_exponent(reports):
    s = reports["sdbv"].summary
    for name in ("SDBV", "ADBV"):
        assert 1.45 <= s[f"{name} exponent (exact, n >= 200)"] <= 1.55
        assert 1.3 <= s[f"{name} exponent (simulated)"] <= 1.7
    for name in ("OneMax", "DBV", "FDBV"):
        assert 1.1 <= s[f"{name} exponent (exact, n >= 200)"] <= 1.25


def test_b_sdbv_drift_is_minimal(reports):
    assert reports["drift"].summary["max over grid of Δ_SDBV − min(others)"] <= 1e-12
    for row in reports["drift"].rows:
        assert row["SDBV"] <= row["min of others"] + 1e-12


def test_c_minimal_drift_is_not_maximal_runtime(reports):
    rows = {r["n"]: r for r in reports["threshold"].rows}
    assert rows[9]["rel. diff n/2-1"] > 0 > rows[10]["rel. diff n/2-1"]
    assert all(rows[n]["rel. diff n/2-2"] < 0 for n in rows if n % 2)


def test_d_self_adjusting_exponents(reports):
    s = reports["selfadjust"].summary
    assert s["SDBV/ADBV mean exponent"] > s["OneMax/DBV/FDBV/linear mean exponent"] + 0.15


def test_e_plus_is_trapped_comma_finishes(reports):
    s = reports["disom"].summary
    plus = s["Exp(0.4) plus censored fractions"]
    assert plus[-1] > plus[0] and plus[-1] >= 0.5
    assert max(s["Exp(0.4) comma censored fractions"] + s["U(0,4) comma censored fractions"]) == 0


def test_f_bounded_ratio(reports):
    s = reports["budget"].summary
    assert 0.5 <= s["ratio min"] and s["ratio max"] <= 6


def test_reports_save_json_and_png(reports, tmp_path):
    for name, report in reports.items():
        paths = report.save(tmp_path, EXPERIMENTS[name].plot)
        assert [p.name for p in paths] == [f"{name}.json", f"{name}.png"]
        data = json.loads(paths[0].read_text())
        assert data["rows"] and data["checks"] and paths[1].stat().st_size > 10_000
        assert name in report.table()


def test_cli_runs_an_experiment(tmp_path, capsys):
    assert cli.main(["threshold", "--sizes", "9,10,11", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[ok] odd n >= 9" in out and (tmp_path / "threshold.png").exists()


def test_cli_plugs_into_the_main_parser(tmp_path):
    p = argparse.ArgumentParser(prog="evopress")
    cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["theory", "disom", "--quick", "--cutoff", "5000", "--out", str(tmp_path)])
    assert args.experiments == ("disom",) and args.cutoff == 5000 and args.quick
    args = p.parse_args(["theory", "all"])
    assert args.experiments == tuple(EXPERIMENTS)
    with pytest.raises(SystemExit):
        p.parse_args(["theory", "sdbv", "--sizes", "ten"])
    with pytest.raises(SystemExit):
        p.parse_args(["theory", "sdbv", "--cutoff", "5"])  # disom only


def test_cli_reports_bad_settings_as_errors(tmp_path, capsys):
    assert cli.main(["sdbv", "--sizes", "100", "--runs", "2", "--out", str(tmp_path)]) == 2
    assert "two different sizes" in capsys.readouterr().err
