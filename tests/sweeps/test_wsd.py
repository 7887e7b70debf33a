"""WSD sweeps (sweep.schedule=wsd, sweeps/wsd.py): the layout of trunks and branches, its compute,
and a tiny real sweep killed in a trunk and in a branch, then re-run to the same results as runs
trained from scratch."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from sweeps.grid import grid_ratio, predicted_optimum
from sweeps.wsd import plan_wsd
from tests.conftest import REPO, run_cli
from train.config import register_configs
from train.plan.schedule import branch_step

register_configs()
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NINE_BUDGETS = ["sweep.budgets=[]", "sweep.budget_range.start=1e11", "sweep.budget_range.stop=1.6e12",
                "sweep.budget_range.count=9"]
# Two sizes, each at two budgets: two trunks and four branches, a few seconds each.
TINY = ["sweep=demo", "sweep.budgets=[1e10,2e10]", "sweep.sizes_per_budget=3", "sweep.span=4",
        "sweep.tokens_per_param=2", "sweep.min_params=2e4", "sweep.max_params=1e5", "model.seq_len=64",
        "optim.batch_tokens=1024", "eval_tokens=4096", "checkpoint_every=10", "wandb.mode=disabled",
        "sweep.schedule=wsd"]


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=["sweep=demo", "sweep.schedule=wsd", *overrides])


def compute_share(layout) -> float:
    total, cosine = layout.compute()
    return total / cosine


def test_demo_layout_trunks_branches_and_compute():
    cfg = sweep_cfg()
    layout = plan_wsd(cfg)
    assert len(layout.points) == 15 and len(layout.trunks) == 5
    assert len({json.dumps(p.plan.shape.to_dict()) for p in layout.points}) == 7
    assert compute_share(layout) < 0.80
    for point in layout.points:
        plan = point.plan
        assert plan.schedule.name == "wsd"
        assert abs(plan.budget.achieved_flops / point.budget - 1) <= cfg.budget.tolerance
        trunk = layout.trunk_of.get(plan.run_id)
        if trunk is None:
            continue
        # the branch shares its trunk's batch, LR and warmup, and leaves it at its cooldown start
        assert plan.budget.batch_seqs == trunk.plan.budget.batch_seqs and plan.lr == trunk.plan.lr
        assert plan.warmup_steps == trunk.plan.warmup_steps and plan.shape == trunk.plan.shape
        step = branch_step(plan.budget.steps, cfg.optim.cooldown_fraction)
        assert (point.budget, step) in trunk.branches and step <= trunk.steps
    for trunk in layout.trunks:
        # up to the largest budget's cooldown start, and the batch and LR rules read at that budget
        assert trunk.steps == max(s for _, s in trunk.branches) and trunk.budget == max(c for c, _ in trunk.branches)
        assert trunk.plan.lr == pytest.approx(0.3118 * trunk.budget ** -0.125)


def test_nine_budgets_sqrt2_apart_cost_at_most_55_percent_and_stay_centred():
    cfg = sweep_cfg(*NINE_BUDGETS)
    layout = plan_wsd(cfg)
    assert len({p.budget for p in layout.points}) == 9
    assert compute_share(layout) <= 0.55
    step = math.log(grid_ratio(cfg.sweep))
    for budget in {p.budget for p in layout.points}:
        targets = sorted(p.target_params for p in layout.points if p.budget == budget)
        centre = math.exp(sum(math.log(t) for t in targets) / len(targets))
        assert abs(math.log(centre / predicted_optimum(budget, cfg.sweep))) <= step / 2 + 1e-9


def test_dry_run_ends_with_the_compute_line(tmp_path):
    proc = run_cli("-m", "sweeps", "sweep=demo", "sweep.schedule=wsd", "dry_run=true",
                   f"sweep.out_dir={tmp_path / 'dry'}", env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("compute: ") and "% of one cosine run per point)" in lines[-1]
    assert float(lines[-1].split("(")[1].split("%")[0]) < 80
    assert "trunk N" in proc.stdout and "5 trunks" in proc.stdout and not (tmp_path / "dry").exists()
    bad = run_cli("-m", "sweeps", "sweep=demo", "sweep.schedule=linear", "dry_run=true", env=ENV)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: sweep.schedule:"), bad.stderr


def sweep(sweep_dir, fault: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | ENV | ({"ISOFLOP_FAULT": fault} if fault else {})
    if not fault:
        env.pop("ISOFLOP_FAULT", None)
    return subprocess.run([sys.executable, "-m", "sweeps", *TINY, f"sweep.out_dir={sweep_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.timeout(900)
def test_killed_trunk_and_branch_rerun_to_the_results_of_runs_from_scratch(tmp_path):
    sweep_dir = tmp_path / "wsd"
    # 1. killed inside the first trunk (step 30; its checkpoints at 10 and 20)
    first = sweep(sweep_dir, fault="step:30")
    assert first.returncode == -signal.SIGKILL, first.stdout[-2000:] + first.stderr[-2000:]
    plan = json.loads((sweep_dir / "plan.json").read_text())
    trunks = {t["label"]: t for t in plan["trunks"]}
    assert len(trunks) == 2 and not list((sweep_dir / "runs").glob("*/result.json"))
    # 2. re-run: the trunk resumes and every trunk finishes first; then killed inside the longest
    # branch (2e10 at N~2.9e4: steps 91..114, own checkpoints at 100 and 110), which no other run reaches
    second = sweep(sweep_dir, fault="step:113")
    out = second.stdout
    assert second.returncode == -signal.SIGKILL, out[-2000:] + second.stderr[-2000:]
    assert "resuming from step 20/114" in out and "launching 2 trunks" in out
    assert out.index("launching 2 trunks") < out.index("branching from trunk")
    for trunk in trunks.values():
        folder = sweep_dir / "trunks" / trunk["label"]
        assert json.loads((folder / "result.json").read_text())["status"] == "completed"
        kept = {int(p.stem.split("-")[1]) for p in (folder / "checkpoints").glob("step-*.pt")}
        assert set(trunk["branch_steps"]) <= kept  # every branch point survives the pruning
    # 3. re-run: the branch resumes from its own checkpoint; the sweep completes
    third = sweep(sweep_dir)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert "resuming from step 110/114" in third.stdout and "launching" in third.stdout
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["points"] == 4 and summary["failed"] == 0
    # the plan rewritten with the summary keeps the trunks, and each branch row estimates its cooldown
    final = json.loads((sweep_dir / "plan.json").read_text())
    assert {t["label"] for t in final["trunks"]} == set(trunks) and all("trunk" in p for p in final["points"])
    rows = (sweep_dir / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and all(",completed," in r for r in rows[1:]), rows  # no trunk rows
    again = sweep(sweep_dir)
    assert again.returncode == 0 and "nothing to train: all 4 runs have finished" in again.stdout

    # every branch ends exactly as the same WSD run trained from scratch, uninterrupted
    for point in plan["points"]:
        run_dir = sweep_dir / "runs" / point["label"]
        result = json.loads((run_dir / "result.json").read_text())
        assert result["schedule"] == "wsd" and result["role"] == "branch"
        assert result["trunk_run_id"] in {t["run_id"] for t in trunks.values()}
        assert result["branch_step"] == point["steps"] - point["cooldown_steps"]
        assert result["steps"] == point["steps"] and result["tokens"] == point["tokens"]
        curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in curve] == list(range(1, point["steps"] + 1))  # the trunk's part copied in
        if point["budget_flops"] != 2e10 or point["params"]["total"] > 3e4:
            continue  # one reference run: the branch that was killed
        scratch = tmp_path / "scratch"
        proc = run_cli("-m", "train", *[a for a in TINY if not a.startswith("sweep.")],
                       f"model.params={point['target_params']}", f"budget.flops={point['budget_flops']}",
                       "optim.schedule=wsd", f"optim.lr={point['lr']!r}", f"wsd.batch_seqs={point['batch_seqs']}",
                       f"wsd.warmup_steps={point['warmup_steps']}", f"out_dir={scratch}", env=ENV, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        reference = json.loads((scratch / "result.json").read_text())
        assert reference["run_id"] == result["run_id"]
        assert reference["final_val_loss"] == result["final_val_loss"]
        assert reference["final_train_loss"] == result["final_train_loss"]
        ref_curve = [json.loads(line) for line in (scratch / "metrics.jsonl").read_text().splitlines()]
        assert [r["train_loss"] for r in ref_curve] == [r["train_loss"] for r in curve]
        assert [r["lr"] for r in ref_curve] == [r["lr"] for r in curve]


def test_gpu_pool_runs_the_trunks_first_and_no_branch_without_its_checkpoint(tmp_path):
    """Under the GPU pool the trunks are a wave of their own; a branch starts only once its trunk's
    checkpoint exists. Here the jobs are a recorder that trains nothing, so no branch may start."""
    from tests.sweeps.test_gpu_pool import RECORDER
    script, record = tmp_path / "recorder.py", tmp_path / "record.jsonl"
    script.write_text(RECORDER)
    sweep_dir = tmp_path / "pool"
    command = f"['{sys.executable}','{script}','{record}']"
    proc = subprocess.run([sys.executable, "-m", "sweeps", *TINY, f"sweep.out_dir={sweep_dir}",
                           "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1]",
                           f"hydra.launcher.command={command}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | ENV)
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    out_dirs = [next(a.split("=", 1)[1] for a in e["args"] if a.startswith("out_dir=")) for e in entries]
    assert len(entries) == 2 and all("/trunks/trunk-" in d for d in out_dirs), out_dirs
    assert all(any(a.startswith("wsd.branch_steps=[") for a in e["args"]) for e in entries)
    assert proc.stderr.count("has no checkpoint at its branch step yet; not started") == 4, proc.stderr[-3000:]
    assert proc.returncode == 3 and "4 branches not started" in proc.stderr, proc.stderr[-2000:]


def test_the_analysis_reads_branches_and_skips_trunks(tmp_path):
    """`python -m analysis fit <sweep dir>` walks every result.json under it: a trunk (role: trunk)
    is no (C, N) point and must not join the fit."""
    from analysis.load import load

    def run(folder, loss, role=None, tokens=1e6):
        folder.mkdir(parents=True)
        result = {"status": "completed", "run_id": folder.name, "budget_flops": 6e10, "convention": "6N",
                  "params": {"total": 1e4, "non_embedding": 5e3}, "tokens": tokens,
                  "flops": {"6N": 6e4 * tokens}, "final_val_loss": loss, "final_train_loss": loss}
        (folder / "result.json").write_text(json.dumps(result | ({"role": role} if role else {})))
    run(tmp_path / "runs" / "branch", 3.0, role="branch")
    run(tmp_path / "trunks" / "trunk", 3.5, role="trunk", tokens=0.8e6)
    points, notes = load([str(tmp_path)], "6N", curves=False)
    assert list(points.loss) == [3.0] and notes == []
