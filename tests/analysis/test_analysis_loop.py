"""The loop closes, end to end (issue 11, acceptance): a small sweep of the demo preset is trained,
fitted, and planned at twice its largest budget; the planned command, run exactly as printed,
trains the sweep's own setup, and its final validation loss lies inside the planner's interval.

The demo preset itself (configs/sweep/demo.yaml: 3 budgets 1e11-4e11 x 5 sizes, vocabulary 320
tied, seq_len 128; about 4 minutes of training on 2 quiet cores) and one planned run at 8e11. It
is as small as the demo gets: smaller budgets put every tiny model's minimum at the smallest size
(their optimum lies near 100-170 tokens per parameter), and 4 sizes per budget left the optimum
of 2e11 outside a parabola's reach (losses 2.71, 2.68, 2.88, 3.04). Marked slow."""

import json
import os
import shlex
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from analysis_helpers import REPO  # noqa: E402

from analysis.setup import read_setup  # noqa: E402

SWEEP = ["sweep=demo", "wandb.mode=disabled"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(REPO))


def _run(args, cwd=REPO, timeout=1800):
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_planned_command_trains_the_sweeps_setup_inside_the_predicted_interval(tmp_path):
    sweep = tmp_path / "sweep"
    _run([sys.executable, "-m", "sweeps", *SWEEP, f"sweep.out_dir={sweep}"])
    fit_dir = tmp_path / "fit"
    _run([sys.executable, "-m", "analysis", "fit", str(sweep), "--out", str(fit_dir)])
    fit = json.loads((fit_dir / "fit.json").read_text())
    assert fit["setup"]["verified"]
    plan = json.loads(_run([sys.executable, "-m", "analysis", "plan", "--fit", str(fit_dir), "--flops", "8e11",
                            "--json"]).stdout)
    assert plan["command"].startswith("python -m train ") and plan["loss_ci"], plan
    # run exactly as printed (the run directory goes under runs/ of the working directory)
    args = shlex.split(plan["command"])
    assert args[:3] == ["python", "-m", "train"]
    work = tmp_path / "work"
    work.mkdir()
    _run([sys.executable, *args[1:]], cwd=work)
    (run_dir,) = [p for p in (work / "runs").iterdir() if (p / "result.json").is_file()]
    result = json.loads((run_dir / "result.json").read_text())
    # it trained the sweep's own setup ...
    assert read_setup(str(run_dir)) == fit["setup"]["config"]
    assert result["params"]["total"] == plan["trains"]["params"] and result["tokens"] == plan["trains"]["tokens"]
    # ... and its final validation loss lies inside the predicted interval
    lo, hi = plan["loss_ci"]
    assert lo <= result["final_val_loss"] <= hi, (result["final_val_loss"], plan["loss"], plan["loss_ci"])
