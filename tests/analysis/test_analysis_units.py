"""Unit tests of the analysis package's parts, in process (fast)."""

import json
import os
import sys
import types

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from analysis_helpers import points, write_rows  # noqa: E402

from analysis.approach1 import fit_approach1  # noqa: E402
from analysis.budgets import assign_budgets  # noqa: E402
from analysis.errors import AnalysisError  # noqa: E402
from analysis.load import load  # noqa: E402
from analysis.minima import Window, fit_parabolas, parse_window  # noqa: E402
from analysis.pipeline import FitOptions, run_fit  # noqa: E402
from analysis.planner import hydra_number, make_plan, train_command  # noqa: E402
from analysis.powerlaw import fit_power_law  # noqa: E402
from analysis.report import fit_dict  # noqa: E402
from analysis.synthetic import isoflop_grid, write_csv, write_sweep  # noqa: E402
from analysis.validate import exclude_incomplete, validate  # noqa: E402


# ---- minima -------------------------------------------------------------------------------------


def test_exact_parabola_gives_exact_vertex_and_curvature():
    x = np.log(np.logspace(7, 9, 9))
    x0, c = np.log(3e8), 0.07
    y = 2.5 + 0.5 * c * (x - x0) ** 2
    f = fit_parabolas(x, y, np.ones((1, 9)), Window())
    assert abs(f.x_opt[0] - x0) < 1e-9 and abs(f.curvature[0] - c) < 1e-9 and abs(f.loss_opt[0] - 2.5) < 1e-12
    assert not f.edge[0] and f.ok[0]


def test_window_is_near_the_minimum_and_all_points_on_request():
    x = np.log(np.logspace(6, 10, 17))  # 0.25 decades apart
    y = 3 + 0.05 * (x - np.log(1e8)) ** 2 + 0.02 * np.abs(x - np.log(1e8)) ** 3  # steeper than a parabola far out
    win = fit_parabolas(x, y, np.ones((1, 17)), Window()).in_window[0]
    assert win.sum() == 5 and np.all(np.abs(x[win] - np.log(1e8)) <= 0.5 * np.log(10) + 1e-9)
    assert fit_parabolas(x, y, np.ones((1, 17)), parse_window("7")).in_window[0].sum() == 7
    everything = fit_parabolas(x, y, np.ones((1, 17)), parse_window(None, all_points=True))
    assert everything.in_window[0].all()
    near = fit_parabolas(x, y, np.ones((1, 17)), Window())
    assert abs(near.x_opt[0] - np.log(1e8)) < 1e-6  # symmetric: both land on the minimum
    assert abs(near.curvature[0] - 0.1) < abs(everything.curvature[0] - 0.1)  # the window sees the local shape


def test_edge_flags():
    x = np.log(np.logspace(7, 9, 7))
    rising = 3 + 0.1 * (x - x[0])  # minimum at the smallest size
    f = fit_parabolas(x, rising + 0.01 * (x - x[0]) ** 2, np.ones((1, 7)), Window())
    assert f.edge[0]
    downward = 3 - 0.05 * (x - x[3]) ** 2
    f = fit_parabolas(x, downward, np.ones((1, 7)), Window())
    assert f.edge[0] and not f.ok[0]


def test_parse_window():
    assert parse_window("0.3dex,4") == Window(points=4, dex=0.3)
    assert parse_window("7") == Window(points=7, dex=None)
    for bad in ("2", "dex", "-1dex", "0.3dex,2"):
        with pytest.raises(AnalysisError):
            parse_window(bad)


# ---- power law ----------------------------------------------------------------------------------


def test_power_law_exact_and_bootstrap_band():
    C = np.logspace(18, 22, 5)
    law = fit_power_law(C, 0.3 * C**0.5)
    assert abs(law.exponent - 0.5) < 1e-12 and abs(law.k / 0.3 - 1) < 1e-9
    assert law.exponent_ci is None and law.predict_ci(C) is None
    rng = np.random.default_rng(0)
    bC = np.tile(C, (200, 1))
    bY = 0.3 * bC**0.5 * np.exp(0.05 * rng.standard_normal(bC.shape))
    law = fit_power_law(C, 0.3 * C**0.5, bC, bY, np.ones(bC.shape, bool))
    lo, hi = law.exponent_ci
    assert lo < 0.5 < hi
    band = law.predict_ci(np.array([1e20, 1e26]))
    assert np.diff(np.log(band), axis=0)[0][1] > np.diff(np.log(band), axis=0)[0][0]  # wider when extrapolating


# ---- budgets and validation ------------------------------------------------------------------


def test_budget_snapping_rounds_and_reports():
    flops = np.array([1.25e16 * 1.001, 1.25e16 * 0.999, 1.25e16, 2.56e19, 2.56e19, 0.995e21, 0.997e21, 1.004e21])
    pts = points({"flops": flops, "params": np.ones(8), "tokens": flops / 6, "loss": np.ones(8)})
    budget, notes = assign_budgets(pts)
    assert list(budget) == [1.25e16] * 3 + [2.56e19] * 2 + [1e21] * 3
    assert "snapped" in notes[0] and "1.25e+16" in notes[0]
    spread = points({"flops": np.array([1e18, 1.09e18, 1.18e18, 1.27e18]), "params": np.ones(4),
                     "tokens": np.ones(4), "loss": np.ones(4)})
    with pytest.raises(AnalysisError, match="cannot snap"):
        assign_budgets(spread)


def test_status_and_validation():
    cols = isoflop_grid(n_sizes=5, noise=0)
    pts = points(cols)
    pts.status[:] = "completed"
    pts.status[0], pts.status[1] = "diverged", "DIVERGED"
    kept, warn = exclude_incomplete(pts)
    assert len(kept) == len(pts) - 2 and "2 diverged" in warn[0].lower()
    pts.flops[4] = -pts.flops[4]
    with pytest.raises(AnalysisError, match="row4: flops=.* is not positive"):
        validate(pts, "6N", drop_invalid=False)
    kept, warn = validate(pts, "6N", drop_invalid=True)
    assert len(kept) == len(pts) - 1 and warn[0].startswith("DROPPED 1")
    # 6N+attn FLOPs sit above 6ND: fine under 6N+attn, refused under 6N
    pts = points(cols)
    pts.flops *= 1.5
    assert validate(pts, "6N+attn", False)[1] == []
    with pytest.raises(AnalysisError):
        validate(pts, "6N", False)


# ---- loading ------------------------------------------------------------------------------------


def test_load_run_dirs_and_malformed_result(tmp_path):
    cols = isoflop_grid(budgets=(1e18, 1e19, 1e20), n_sizes=5, noise=0)
    write_sweep(str(tmp_path), cols)
    pts, notes = load([str(tmp_path)], "6N_nonembed")
    assert len(pts) == 15 and len(pts.curves) == 15
    assert np.allclose(pts.params, 0.8 * cols["params"]) and np.allclose(pts.flops, 0.8 * cols["flops"])
    bad = tmp_path / "C1e+18" / "broken"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps({"status": "completed", "run_id": "broken", "tokens": 5}))
    pts, _ = load([str(tmp_path)], "6N")
    with pytest.raises(AnalysisError, match="broken.*flops is missing"):
        validate(pts, "6N", False)
    # the same directory twice: rows are not counted twice
    pts, notes = load([str(tmp_path), str(tmp_path)], "6N")
    assert len(pts) == 16 and any("duplicate" in n for n in notes)


def test_long_csv_keeps_the_asked_convention(tmp_path):
    cols = isoflop_grid(budgets=(1e18,), n_sizes=3, noise=0)
    rows = [[c, n, d, l, conv] for conv, k in (("6N", 1), ("6N+attn", 1.2))
            for c, n, d, l in zip(cols["flops"] * k, cols["params"], cols["tokens"], cols["loss"])]
    path = write_rows(tmp_path / "long.csv", ["flops", "params", "tokens", "loss", "convention"], rows)
    pts, notes = load([path], "6N+attn")
    assert len(pts) == 3 and np.allclose(pts.flops, 1.2 * cols["flops"]) and "kept the 3 rows" in notes[0]


def test_approach1_needs_curves():
    assert fit_approach1(points(isoflop_grid(n_sizes=5))) is None


def test_fit_dict_is_strict_json(tmp_path):
    path = write_csv(isoflop_grid(n_sizes=9, noise=0.002), str(tmp_path / "r.csv"))
    res = run_fit([path], FitOptions(n_boot=50))
    d = fit_dict(res, [])
    json.dumps(d, allow_nan=False)
    assert len(d["bootstrap"]["a"]) == 50 and len(d["approach3"]["bootstrap"]) == 50


# ---- planner ------------------------------------------------------------------------------------

FIT = {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1 / 0.6, "convention": "6N"}


def test_hydra_number():
    assert hydra_number(1e21) == "1e21" and hydra_number(3.5e19) == "3.5e19" and hydra_number(123.0) == "123"


def test_plan_point_values_without_bootstrap():
    p = make_plan(FIT, flops=1e20)
    assert abs(p.N_opt - 1e9) < 1 and abs(p.D_opt / (1e20 / 6e9) - 1) < 1e-12 and p.N_opt_ci is None
    assert abs(make_plan(FIT, tokens=p.D_opt).C / 1e20 - 1) < 1e-12
    with pytest.raises(AnalysisError, match="exactly one"):
        make_plan(FIT, flops=1e20, params=1e9)


def test_train_command_catalog_and_fallback(monkeypatch):
    fake = types.ModuleType("train.plan.shapes")
    fake.CATALOG = {"llama-125m": object()}
    fake.nearest_catalog_name = lambda n, vocab_size=50304, tolerance=0.15: "llama-125m" if abs(n / 1.25e8 - 1) <= tolerance else None
    monkeypatch.setitem(sys.modules, "train.plan.shapes", fake)
    assert train_command(1.3e8, 2e19, "6N") == "python -m train model=llama-125m budget.flops=2e19 budget.convention=6N"
    assert train_command(5e9, 1e22, "6N+attn") == "python -m train model.params=5000000000 budget.flops=1e22 budget.convention=6N+attn"
    broken = types.ModuleType("train.plan.shapes")  # a module without the interface: fall back, don't crash
    monkeypatch.setitem(sys.modules, "train.plan.shapes", broken)
    assert "model.params=130000000" in train_command(1.3e8, 2e19, "6N")


def test_one_blas_thread_sets_and_restores():
    import scipy.optimize  # noqa: F401  (loads scipy's own OpenBLAS too)
    from threadpoolctl import threadpool_info, threadpool_limits

    from analysis.blas import one_blas_thread

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("no BLAS is loaded here")
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with one_blas_thread():
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before


def test_refit_checks_budget_against_the_runs_own_convention(tmp_path):
    # tiny models: embeddings are 70% of N, so 6N_nonembed FLOPs sit at 0.3x the 6N budget
    cols = isoflop_grid(budgets=(1e18, 1e19, 1e20), n_sizes=5, noise=0)
    write_sweep(str(tmp_path / "ok"), cols, nonembed_frac=0.3)
    pts, _ = load([str(tmp_path / "ok")], "6N_nonembed")
    assert np.allclose(pts.flops / pts.budget, 0.3, rtol=1e-6)
    assert validate(pts, "6N_nonembed", False)[1] == []
    # a budget at a third of the run's own FLOPs is still caught
    write_sweep(str(tmp_path / "bad"), cols | {"budget": cols["budget"] / 3})
    pts, _ = load([str(tmp_path / "bad")], "6N_nonembed")
    with pytest.raises(AnalysisError, match="flops under the run's own convention=.* is 3x its budget"):
        validate(pts, "6N_nonembed", False)
