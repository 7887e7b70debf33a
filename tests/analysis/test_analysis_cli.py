"""The CLI end to end, in a subprocess as a user runs it: outputs, contract, and bad input.

Bad input must exit non-zero with a message naming the rows or fields, and write nothing that
looks like a fit (no fit.json).
"""

import csv
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from analysis_helpers import DATA, read_csv, run_cli  # noqa: E402

from analysis.synthetic import isoflop_grid, true_exponents, write_csv, write_sweep  # noqa: E402

A_TRUE, _ = true_exponents()
COLS = ["flops", "params", "tokens", "loss", "budget"]


def _grid(**kw):
    kw = {"n_sizes": 9, "span_dex": 0.8, "noise": 0.002, "seed": 0} | kw
    return isoflop_grid(**kw)


def _fails(res, out, *needles):
    assert res.returncode != 0, res.stdout + res.stderr
    assert res.stderr.startswith("error:") or "\nerror:" in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)
    assert not os.path.exists(os.path.join(out, "fit.json"))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One CLI fit of a synthetic results CSV, shared by the tests that read its outputs."""
    tmp = tmp_path_factory.mktemp("fitted")
    csv_path = write_csv(_grid(), str(tmp / "results.csv"), COLS)
    out = tmp / "fit"
    return out, run_cli("fit", csv_path, "--out", out, "--bootstrap", "300")


def test_fit_csv_writes_every_output_and_the_contract(fitted):
    out, res = fitted
    assert res.returncode == 0, res.stderr
    for name in ("fit.json", "minima.csv", "report.md", "isoflop.png", "isoflop.svg", "scaling.png", "scaling.svg"):
        assert (out / name).stat().st_size > 0, name
    fit = json.loads((out / "fit.json").read_text())
    for key in ("a", "b", "k_N", "k_D", "a_ci", "b_ci", "convention", "budgets", "warnings"):
        assert key in fit, key
    assert fit["convention"] == "6N" and abs(fit["a"] - A_TRUE) < 0.02
    assert fit["a_ci"][0] < fit["a"] < fit["a_ci"][1]
    for m in fit["budgets"]:
        assert set(m) >= {"budget", "N_opt", "D_opt", "loss_opt", "n_points", "edge"}
        assert isinstance(m["edge"], bool) and m["n_points"] == 9
    assert fit["approach3"]["a_ci"] and fit["approach1"] is None  # a CSV has no curves
    # the summary ends with a and b, their intervals, and the figure paths
    last = res.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("Approach 2: a = ") and "b = " in last[0] and "[" in last[0]
    assert last[1].startswith("figures: ") and str(out / "isoflop.png") in last[1]
    report = (out / "report.md").read_text()
    assert "![" in report and "isoflop.png" in report and "scaling.png" in report
    with open(out / "minima.csv") as f:
        assert len(list(csv.DictReader(f))) == 7


def test_fit_sweep_directory_end_to_end(tmp_path):
    cols = _grid(budgets=np.logspace(18, 21, 6))
    n = len(cols["flops"])
    statuses = ["completed"] * n
    statuses[3], statuses[20] = "diverged", "failed"
    write_sweep(str(tmp_path / "sweep"), cols, statuses=statuses)
    os.makedirs(tmp_path / "sweep" / "running")  # a run still in progress: metrics but no result
    (tmp_path / "sweep" / "running" / "metrics.jsonl").write_text('{"step": 1, "tokens": 10}\n')
    out = tmp_path / "fit"
    res = run_cli("fit", tmp_path / "sweep", "--out", out, "--bootstrap", "200")
    assert res.returncode == 0, res.stderr
    assert "excluded 2 run(s) that did not complete (1 diverged, 1 failed)" in res.stderr
    fit = json.loads((out / "fit.json").read_text())
    assert fit["n_points"] == n - 2
    assert any("without result.json" in s for s in fit["notes"])
    assert fit["approach1"] is not None and (out / "approach1.png").exists()
    assert abs(fit["a"] - A_TRUE) < 0.03
    # refit under another convention from the per-convention FLOPs in result.json
    res2 = run_cli("fit", tmp_path / "sweep", "--out", tmp_path / "ne", "--convention", "6N_nonembed",
                   "--bootstrap", "0", "--no-approach1", "--no-approach3")
    assert res2.returncode == 0, res2.stderr
    fit2 = json.loads((tmp_path / "ne" / "fit.json").read_text())
    assert fit2["convention"] == "6N_nonembed"
    # N is 0.8x smaller and so is C: the exponent is unchanged, the coefficient moves
    assert abs(fit2["a"] - fit["a"]) < 1e-6 and abs(fit2["budgets"][0]["C"] / fit["budgets"][0]["C"] - 0.8) < 1e-6


def test_plan_cli_text_json_and_inverses(fitted, tmp_path):
    out, fit_res = fitted
    assert fit_res.returncode == 0, fit_res.stderr
    res = run_cli("plan", "--fit", out / "fit.json", "--flops", "1e22")
    assert res.returncode == 0, res.stderr
    assert "N_opt" in res.stdout and "95% CI" in res.stdout and "predicted loss" in res.stdout
    assert "train: python -m train " in res.stdout and "budget.flops=1e22 budget.convention=6N" in res.stdout
    assert "extrapolating 1.0 decades" in res.stdout
    js = json.loads(run_cli("plan", "--fit", out, "--flops", "1e22", "--json").stdout)
    fit = json.loads((out / "fit.json").read_text())
    assert abs(js["N_opt"] / (fit["k_N"] * 1e22 ** fit["a"]) - 1) < 1e-9
    assert js["N_opt_ci"][0] < js["N_opt"] < js["N_opt_ci"][1]
    inv = json.loads(run_cli("plan", "--fit", out, "--params", str(js["N_opt"]), "--json").stdout)
    assert abs(inv["C"] / 1e22 - 1) < 1e-6 and abs(inv["D_opt"] / js["D_opt"] - 1) < 1e-6
    bad = run_cli("plan", "--fit", tmp_path / "nowhere.json", "--flops", "1e20")
    assert bad.returncode != 0 and "nowhere.json" in bad.stderr


# ---- bad input -------------------------------------------------------------------------------


def test_missing_column(tmp_path):
    path = write_csv(_grid(), str(tmp_path / "r.csv"), ["flops", "params", "loss"])
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o", "missing column(s) tokens")


def test_nan_and_negative_values_name_rows(tmp_path):
    cols = _grid()
    cols["loss"][3] = np.nan
    cols["params"][10] = -5.0
    path = write_csv(cols, str(tmp_path / "r.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o",
           "2 invalid row(s)", "r.csv:5: loss is missing or not a finite number", "r.csv:12: params=-5 is not positive")


def test_drop_invalid_drops_loudly(tmp_path):
    cols = _grid()
    cols["loss"][3] = np.nan
    path = write_csv(cols, str(tmp_path / "r.csv"), COLS)
    res = run_cli("fit", path, "--out", tmp_path / "o", "--drop-invalid", "--bootstrap", "0", "--no-approach3")
    assert res.returncode == 0, res.stderr
    assert "DROPPED 1 invalid row(s)" in res.stderr and "r.csv:5" in res.stderr
    assert any("DROPPED" in w for w in json.loads((tmp_path / "o" / "fit.json").read_text())["warnings"])


def test_flops_at_a_third_of_6ND(tmp_path):
    # Marin's budgets in run names are a third of the logged FLOPs: either column can be the wrong one
    cols = _grid()
    cols["flops"][5] /= 3
    path = write_csv(cols, str(tmp_path / "r.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o", "r.csv:7", "0.333x 6*params*tokens")
    cols = _grid()
    cols["budget"][5] /= 3
    path = write_csv(cols, str(tmp_path / "b.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o", "b.csv:7", "3x its budget")


def test_gadre_overflowed_flops_column(tmp_path):
    rows = read_csv("gadre2024_final_losses.csv")
    path = tmp_path / "gadre.csv"
    with open(path, "w") as f:
        f.write("run_id,flops,params,tokens,loss\n")
        for r in rows:
            f.write(f"{r['name']},{r['C_6ND']},{r['params']},{r['tokens']},{r['loss__c4_val']}\n")
    n_bad = sum(abs(float(r["C_6ND"]) / (6 * float(r["params"]) * float(r["tokens"])) - 1) > 0.1 for r in rows)
    assert n_bad == 47
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o",
           f"{n_bad} invalid row(s) of 104", "run c4_original-d=1024_l=24_h=8-0.5", "flops=-8.28107e+18 is not positive")


def test_budget_with_fewer_than_three_points(tmp_path):
    cols = _grid()
    keep = np.ones(len(cols["flops"]), bool)
    keep[:7] = False  # budget 1e18 keeps two sizes
    path = write_csv({k: v[keep] for k, v in cols.items()}, str(tmp_path / "r.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o",
           "budget 1e+18: 2 size(s)", "r.csv:2", "--drop-invalid")


def test_all_budgets_at_the_edge(tmp_path):
    cols = _grid(n_sizes=7, span_dex=0.5, noise=0.0, offset_dex=1.0)
    path = write_csv(cols, str(tmp_path / "r.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o",
           "every budget is flagged", "1e+18 (minimum at the edge")


def test_csv_of_another_convention_and_unknown_paths(tmp_path):
    cols = _grid()
    path = tmp_path / "r.csv"
    with open(path, "w") as f:
        f.write("flops,params,tokens,loss,convention\n")
        for c, n, d, l in zip(cols["flops"], cols["params"], cols["tokens"], cols["loss"]):
            f.write(f"{c},{n},{d},{l},6N\n")
    _fails(run_cli("fit", path, "--out", tmp_path / "o", "--convention", "6N+attn"), tmp_path / "o",
           "under convention 6N, not 6N+attn")
    _fails(run_cli("fit", tmp_path / "missing.csv", "--out", tmp_path / "o"), tmp_path / "o", "missing.csv: no such file")


def test_reference_data_copied_into_tests():
    for name in ("porian2024_rw_isoflop_points.csv", "gadre2024_final_losses.csv", "chinchilla_tableA3_approach2_3.csv"):
        assert (DATA / name).is_file()


@pytest.mark.parametrize("window", ["2", "0dex", "five"])
def test_bad_window_spec(tmp_path, window):
    path = write_csv(_grid(), str(tmp_path / "r.csv"), COLS)
    _fails(run_cli("fit", path, "--out", tmp_path / "o", "--window", window), tmp_path / "o", "--window")


def test_real_sweeper_output_all_edge_then_include_edge(tmp_path):
    """Our sweeper's own results.csv: both minima at the small end, so the fit refuses; forced with
    --include-edge it still writes strict JSON and figures (degenerate fits are warned about)."""
    path = DATA / "demo_tiny_results.csv"
    _fails(run_cli("fit", path, "--out", tmp_path / "o"), tmp_path / "o", "every budget is flagged", "1e+11 (")
    res = run_cli("fit", path, "--out", tmp_path / "f", "--include-edge", "--bootstrap", "50")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "f" / "fit.json").read_text()
    fit = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert fit["n_points"] == 10 and all(m["edge"] for m in fit["budgets"])
    assert fit["approach3"]["alpha"] >= 0 and fit["approach3"]["beta"] >= 0
    assert (tmp_path / "f" / "isoflop.png").stat().st_size > 0
    plan = run_cli("plan", "--fit", tmp_path / "f", "--flops", "1e13")
    assert plan.returncode == 0 and "warning(s)" in plan.stdout


def test_fit_on_bits_per_byte(tmp_path):
    # one tokenizer: bpb is the loss over a constant (ln 2 x bytes per token), so the minima and the
    # exponents are the loss's; the unit reaches fit.json and the plan
    cols = _grid()
    rows = [dict(zip(COLS, map(float, r))) | {"bpb": float(r[3]) / (np.log(2) * 3.6)} for r in zip(*(cols[c] for c in COLS))]
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLS + ["bpb"])
        writer.writeheader()
        writer.writerows(rows)
    by_loss = run_cli("fit", str(path), "--out", str(tmp_path / "loss"), "--no-approach3", "--bootstrap", "50")
    by_bpb = run_cli("fit", str(path), "--out", str(tmp_path / "bpb"), "--loss", "bpb", "--bootstrap", "50")
    assert by_loss.returncode == 0 and by_bpb.returncode == 0, by_bpb.stderr[-2000:]
    fit_loss = json.loads((tmp_path / "loss" / "fit.json").read_text())
    fit_bpb = json.loads((tmp_path / "bpb" / "fit.json").read_text())
    assert fit_bpb["loss"] == "bpb" and fit_bpb["a"] == pytest.approx(fit_loss["a"], abs=1e-9)
    assert [b["loss_opt"] * np.log(2) * 3.6 for b in fit_bpb["budgets"]] == pytest.approx(
        [b["loss_opt"] for b in fit_loss["budgets"]], rel=1e-9)
    plan = run_cli("plan", "--fit", str(tmp_path / "bpb" / "fit.json"), "--flops", "1e21")
    assert plan.returncode == 0 and "bits per byte" in plan.stdout, plan.stdout + plan.stderr


def test_fit_on_bits_per_byte_needs_the_column(tmp_path):
    cols = _grid()
    path = write_csv(cols, str(tmp_path / "r.csv"), COLS)
    res = run_cli("fit", path, "--out", str(tmp_path / "fit"), "--loss", "bpb")
    _fails(res, str(tmp_path / "fit"), "--loss bpb needs a `bpb` column")
