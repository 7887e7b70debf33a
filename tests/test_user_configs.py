"""A user's own Hydra configs work as Hydra users expect: `--config-dir`, `hydra.searchpath` and a
launcher of their own compose, and a mistake in them is still one `error:` line taken from Hydra's
own loader (train/overrides.py)."""
import json
import textwrap

import pytest

from tests.conftest import run_cli


@pytest.fixture
def user_conf(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A user's own corpus.\n\nIt has two paragraphs.\n")
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "mycorpus.yaml").write_text(textwrap.dedent(f"""\
        name: mycorpus
        source: text
        paths: [{corpus}]
        vocab_size: 384
        """))
    (conf / "hydra" / "launcher").mkdir(parents=True)
    (conf / "hydra" / "launcher" / "mycluster.yaml").write_text(textwrap.dedent("""\
        # a site's own launcher: the GPU pool with its settings
        defaults:
          - gpu_pool
        runs_per_gpu: 3
        """))
    return conf


PLAN = ("model.params=1e5", "budget.flops=3e10", "model.seq_len=64", "dry_run=true")


def plan_of(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_config_dir_adds_a_data_preset(user_conf):
    plan = plan_of(run_cli("-m", "train", "--config-dir", str(user_conf), "data=mycorpus", *PLAN))
    assert plan["shape"]["vocab_size"] == 384  # the user's preset, not the default's 2048


def test_searchpath_adds_a_data_preset(user_conf):
    plan = plan_of(run_cli("-m", "train", f"hydra.searchpath=[file://{user_conf}]", "data=mycorpus", *PLAN))
    assert plan["shape"]["vocab_size"] == 384


def test_a_users_launcher_config_composes_and_is_instantiated(user_conf, tmp_path):
    proc = run_cli("-m", "sweeps", "sweep=demo", "--config-dir", str(user_conf), "hydra/launcher=mycluster",
                   f"sweep.out_dir={tmp_path / 'sweep'}", "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run: nothing trained" in proc.stdout


def test_mistakes_in_user_configs_are_one_line_from_hydra(user_conf, tmp_path):
    (user_conf / "data" / "broken.yaml").write_text("name: broken\nvocab_sise: 384\n")
    cases = [
        (["--config-dir", str(user_conf), "data=mycorpuss", *PLAN],
         "error: data: unknown data 'mycorpuss'; choose one of broken, embedded,"),
        (["--config-dir", str(user_conf), "data=broken", *PLAN], "error: data.vocab_sise: unknown config key"),
        (["--config-dir", str(tmp_path / "nowhere"), *PLAN], "error: --config-dir: no such folder"),
    ]
    for args, expected in cases:
        proc = run_cli("-m", "train", *args)
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith(expected), (args, proc.stderr)
    # the user's presets are among the options Hydra lists
    proc = run_cli("-m", "train", "--config-dir", str(user_conf), "data=nope", *PLAN)
    assert "mycorpus" in proc.stderr and "Traceback" not in proc.stderr
