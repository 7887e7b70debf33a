"""Bad input, everywhere a user types or points: each case is a real CLI call that must fail with
`error: <the field>...` on one line, a non-zero exit code, and nothing recorded as finished (no
result.json in the run directory, no results.csv or summary.json in the sweep directory, no
fit.json in the analysis output). docs/reliability.md lists every case with its message.

Most cases fail before torch is imported, in about a second each.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import ENV, MICRO

def torch_cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


# (id, arguments after `python -m train <MICRO>`, how stderr's error line starts)
TRAIN = [
    ("unknown key", ["model.foo=1"], "error: model.foo: unknown config key"),
    ("unknown group option", ["model=llama-3b"], "error: model: unknown model 'llama-3b'"),
    ("float field, not a number", ["budget.flops=abc"], "error: budget.flops: value 'abc' of type 'str' could not be converted to Float"),
    ("int field, a fraction", ["seed=1.5"], "error: seed: value '1.5' of type 'float' could not be converted to Integer"),
    ("bool field, not a bool", ["compile=maybe"], "error: compile: value 'maybe' is not a valid bool"),
    ("list field given a scalar", ["wandb.tags=x"], "error: wandb.tags: invalid value assigned: str is not a ListConfig"),
    ("new key in a dict field", ["optim.lr_table={a: 1}"], "error: optim.lr_table: key 'a' is not in struct"),
    ("negative budget", ["budget.flops=-3e11"], "error: budget.flops: must be a positive finite number"),
    ("zero budget", ["budget.flops=0"], "error: budget.flops: must be a positive finite number"),
    ("NaN budget", ["budget.flops=nan"], "error: budget.flops: must be a positive finite number, got nan"),
    ("infinite budget", ["budget.flops=inf"], "error: budget.flops: must be a positive finite number, got inf"),
    ("budget too small for a step", ["budget.flops=1e7"], "error: budget.flops"),
    ("budget too small for one batch", ["budget.flops=1e6"], "error: budget.flops: 1e+06 FLOPs affords 8.648 tokens, less than one batch"),
    ("budget tolerance out of range", ["budget.tolerance=-1"], "error: budget.tolerance: must lie between 0 and 1"),
    ("head_dim that does not divide d_model", ["model.params=null", "model.d_model=64", "model.n_layer=2", "model.head_dim=48"],
     "error: model.head_dim: 48 does not divide model.d_model 64"),
    ("lr table with a non-numeric size", ["optim.lr_rule=table", "+optim.lr_table.abc=1"],
     "error: optim.lr_table: keys and values must be numbers"),
    ("eval fraction above 1", ["eval_fraction=2"], "error: eval_fraction: must lie in [0, 1]"),
    ("zero model size", ["model.params=0"], "error: model.params: must be a positive finite number"),
    ("NaN model size", ["model.params=nan"], "error: model.params: must be a positive finite number, got nan"),
    ("model size out of reach", ["model.params=10"], "error: model.params: no shape reaches"),
    ("negative sequence length", ["model.seq_len=-64"], "error: model.seq_len: must be a positive"),
    ("negative learning rate", ["optim.lr=-1"], "error: optim.lr: must be a positive finite number"),
    ("unknown FLOP convention", ["budget.convention=7N"], "error: budget.convention: unknown convention"),
    ("unknown attention backend", ["model.attention=foo"], "error: model.attention: unknown backend 'foo'"),
    ("unknown device", ["device=tpu"], "error: device: unknown device 'tpu'"),
    ("unknown precision", ["precision=fp8"], "error: precision: unknown value 'fp8'"),
    ("unknown wandb mode", ["wandb.mode=sometimes"], "error: wandb.mode: unknown mode 'sometimes'"),
    ("negative eval interval", ["eval_every=-1"], "error: eval_every: must be 0 (automatic) or a positive"),
    ("divergence factor below 1", ["divergence_factor=0.5"], "error: divergence_factor: must be 0 (off) or a finite number above 1"),
    ("text source without paths", ["data.source=text"], "error: data.paths: is empty"),
    ("missing corpus file", ["data=text", "data.vocab_size=512", "data.paths=[/nonexistent/corpus.txt]"], "error: data.paths: no such file or folder"),
    ("tokenizer smaller than its vocabulary", ["data.tokenizer=gpt2"], "error: data.vocab_size: 512 is smaller than the gpt2 tokenizer's 50257 tokens"),
    ("dataset revision for a source not on the Hub", ["data.hf_revision=main"], "error: data.hf_revision: applies to data.source=hf only, not 'embedded'"),
    ("Hub tokenizer without a name", ["data.tokenizer=hub"], "error: data.tokenizer_name: is empty; data.tokenizer=hub needs a Hub model id"),
    ("tokenizer name without data.tokenizer=hub", ["data.tokenizer_name=gpt2"], "error: data.tokenizer_name: applies to data.tokenizer=hub only, not 'bpe'"),
    ("Hub tokenizer not in the cache, offline", ["data.tokenizer=hub", "data.tokenizer_name=isoflop-tests/not-cached"],
     "error: data.tokenizer_name: 'isoflop-tests/not-cached' is not in the Hugging Face cache"),
    ("negative seed", ["seed=-1"], "error: seed: must be an integer in [0, 2**32 - 1]"),
    ("zero CPU threads", ["cpu_threads=0"], "error: cpu_threads: must be at least 1"),
    ("warmup longer than the run", ["optim.warmup_fraction=2"], "error: optim.warmup_fraction: must lie in [0, 1)"),
    ("negative final LR", ["optim.final_lr_fraction=-1"], "error: optim.final_lr_fraction: must lie in [0, 1]"),
    ("zero divergence window", ["divergence_window=0"], "error: divergence_window: must be at least 1 step"),
]
TRAIN_WITH_FILES = [  # cases that need files made by the `files` fixture ({name} is filled in)
    ("empty corpus", ["data=text", "data.vocab_size=512", "data.paths=[{empty}]"], "error: data.paths: the corpus is empty"),
    ("corpus too small to split", ["data=text", "data.vocab_size=512", "data.paths=[{one_line}]"], "error: data: the corpus has 1 document(s)"),
    ("prepared data, other vocabulary", ["data.source=prepared", "data.paths=[{prepared}]", "data.vocab_size=1024"], "error: data.vocab_size: 1024 does not match the prepared data's vocab_size 512"),
    ("prepared data, other tokenizer", ["data.source=prepared", "data.paths=[{retokenized}]"], "error: data.tokenizer: "),
    ("out_dir of another run", ["out_dir={reference}", "seed=1"], "error: out_dir: "),
    ("out_dir that is a file", ["out_dir={a_file}"], "error: out_dir: {a_file} is a file, not a folder"),
    ("out_dir in a read-only folder", ["out_dir={read_only}/run"], "error: out_dir: cannot write in {read_only}"),
    ("data cache in a read-only folder", ["data.cache_dir={read_only}/cache"],
     "error: data.cache_dir: cannot write the prepared data in {read_only}"),
]
SWEEPS = [
    ("no preset", [], "error: sweep: choose a preset"),
    ("unknown preset", ["sweep=nosuch"], "error: sweep: unknown sweep 'nosuch'"),
    ("launcher without its plugin", ["sweep=demo", "hydra/launcher=ray"], "error: hydra/launcher: unknown launcher 'ray'"),
    ("unknown sweep key", ["sweep=demo", "sweep.bogus=1"], "error: sweep.bogus: unknown config key"),
    ("budget list, not numbers", ["sweep=demo", "sweep.budgets=[abc]"], "error: sweep.budgets[0]: value 'abc' of type 'str' could not be converted to Float"),
    ("negative budget in the list", ["sweep=demo", "sweep.budgets=[-1e10]"], "error: sweep.budgets: every budget must be a positive finite number"),
    ("too few sizes", ["sweep=demo", "sweep.sizes_per_budget=0"], "error: sweep.sizes_per_budget: need at least 3 sizes"),
    ("span below 1", ["sweep=demo", "sweep.span=0.5"], "error: sweep.span: must be > 1"),
    ("negative effective TFLOP/s", ["sweep=demo", "sweep.effective_tflops=-1", "dry_run=true"],
     "error: sweep.effective_tflops: must be a positive TFLOP/s figure"),
    ("one budget from a range with two ends", ["sweep=demo", "sweep.budgets=[]", "sweep.budget_range.start=1e11",
                                               "sweep.budget_range.stop=4e11", "sweep.budget_range.count=1", "dry_run=true"],
     "error: sweep.budget_range: count=1 gives one budget, but start (1e+11) and stop (4e+11) differ"),
    ("warmup longer than the run", ["sweep=demo", "optim.warmup_fraction=2", "dry_run=true"], "error: optim.warmup_fraction"),
    ("negative seed", ["sweep=demo", "seed=-1"], "error: seed: must be an integer"),
    ("SLURM launcher without a cluster", ["sweep=demo", "hydra/launcher=submitit_slurm"],
     "error: hydra/launcher=submitit_slurm: no SLURM cluster to submit to"),
    ("GPU pool without CUDA", ["sweep=demo", "sweep.budgets=[1e10]", "sweep.sizes_per_budget=3", "sweep.tokens_per_param=2",
                               "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0]"],
     "error: hydra.launcher.gpus: lists GPU(s) ['0'], but torch sees no CUDA GPU"),
    ("out_dir and sweep.out_dir that disagree", ["sweep=demo", "out_dir=/tmp/elsewhere", "dry_run=true"],
     "error: out_dir: /tmp/elsewhere and sweep.out_dir="),
]
if torch_cuda_available():  # the GPU pool case needs a machine without CUDA
    SWEEPS = [case for case in SWEEPS if case[0] != "GPU pool without CUDA"]
SWEEPS_WITH_FILES = [  # the sweep directory itself is the bad input
    ("sweep.out_dir that is a file", "{a_file}", "error: sweep.out_dir: {a_file} is a file, not a folder"),
    ("sweep.out_dir in a read-only folder", "{read_only}/sweep", "error: sweep.out_dir: cannot write in {read_only}"),
]
ANALYSIS = [  # CSV contents; None: the file does not exist
    ("CSV without a tokens column", "flops,params,loss\n1e18,1e8,3.0\n", "error: {csv}: missing column(s) tokens"),
    ("empty CSV", "", "error: {csv}: missing column(s) flops, params, tokens, loss"),
    ("missing CSV", None, "error: {csv}: no such file or directory"),
]
# The analysis reports invalid values as a header line, one line per bad row (naming the column),
# and a hint: 3 lines for one row. That format is analysis/'s; the row line names the field.
ANALYSIS_ROWS = [
    ("non-numeric loss", "flops,params,tokens,loss\n1e18,1e8,1.6e9,abc\n", "loss is missing or not a finite number"),
    ("negative params", "flops,params,tokens,loss\n1e18,-1e8,1.6e9,3.0\n", "params=-1e+08 is not positive"),
]


def _read_only_dir(path):
    """A folder this process cannot write in: mode 555, or (as root, whom modes do not stop) the
    immutable attribute. None where neither works."""
    import os
    import subprocess
    path.mkdir()
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return path
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            (path / "probe").touch()
        except OSError:
            return path
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    return None


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    import subprocess
    path = _read_only_dir(tmp_path_factory.mktemp("ro") / "locked")
    yield path
    if path is not None:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference, read_only):
    from train.data import DataConfig, prepare_data
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty.txt").write_text("")
    (root / "one_line.txt").write_text("just one short document\n")
    prepared = prepare_data(DataConfig(vocab_size=512))  # the micro run's corpus, from the cache
    shutil.copytree(prepared.dir, root / "prepared")
    shutil.copytree(prepared.dir, root / "retokenized")
    tokenizer = json.loads((root / "retokenized" / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["<|zz|>"] = max(tokenizer["model"]["vocab"].values()) + 1  # another vocabulary
    (root / "retokenized" / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert hashlib.sha256((root / "retokenized" / "tokenizer.json").read_bytes()).hexdigest() != \
        prepared.meta["tokenizer"]["sha256"]
    (root / "a_file").write_text("not a folder")
    return {"empty": root / "empty.txt", "one_line": root / "one_line.txt", "prepared": root / "prepared",
            "retokenized": root / "retokenized", "reference": reference, "a_file": root / "a_file",
            "read_only": read_only}


def _one_error_line(stderr: str, expected: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), stderr[-2000:]
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr[-2000:]


@pytest.mark.parametrize("name,args,expected", TRAIN, ids=[c[0] for c in TRAIN])
def test_train(tmp_path, name, args, expected):
    run_dir = tmp_path / "run"
    proc = run_cli("-m", "train", *MICRO, f"out_dir={run_dir}", *args, env=ENV)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    _one_error_line(proc.stderr, expected)
    assert not (run_dir / "result.json").exists()


@pytest.mark.parametrize("name,args,expected", TRAIN_WITH_FILES, ids=[c[0] for c in TRAIN_WITH_FILES])
def test_train_with_files(tmp_path, files, name, args, expected):
    run_dir = tmp_path / "run"
    if "{read_only}" in " ".join(args) and files["read_only"] is None:
        pytest.skip("cannot make a read-only folder here")
    args = [a.format(**files) for a in args]
    expected = expected.format(**files)
    before = (files["reference"] / "result.json").read_bytes()
    proc = run_cli("-m", "train", *MICRO, f"out_dir={run_dir}", *args, env=ENV)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    _one_error_line(proc.stderr, expected)
    assert not (run_dir / "result.json").exists()
    assert (files["reference"] / "result.json").read_bytes() == before, "another run's result is untouched"


@pytest.mark.parametrize("name,args,expected", SWEEPS, ids=[c[0] for c in SWEEPS])
def test_sweeps(tmp_path, name, args, expected):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "sweeps", *args, f"sweep.out_dir={sweep_dir}", env=ENV)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    _one_error_line(proc.stderr, expected)
    assert not (sweep_dir / "results.csv").exists() and not (sweep_dir / "summary.json").exists()


@pytest.mark.parametrize("name,where,expected", SWEEPS_WITH_FILES, ids=[c[0] for c in SWEEPS_WITH_FILES])
def test_sweeps_with_files(files, name, where, expected):
    if "{read_only}" in where and files["read_only"] is None:
        pytest.skip("cannot make a read-only folder here")
    sweep_dir = where.format(**files)
    proc = run_cli("-m", "sweeps", "sweep=demo", f"sweep.out_dir={sweep_dir}", env=ENV)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    _one_error_line(proc.stderr, expected.format(**files))
    assert files["a_file"].read_text() == "not a folder"
    assert files["read_only"] is None or not any(files["read_only"].iterdir())


def test_refine_that_replays_a_slurm_launcher_without_a_cluster(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    command = {"overrides": ["sweep=demo", "hydra/launcher=submitit_slurm"]}
    (sweep_dir / "command.json").write_text(json.dumps(command))
    proc = run_cli("-m", "sweeps", "refine", str(sweep_dir), env=ENV)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    _one_error_line(proc.stderr, "error: hydra/launcher=submitit_slurm: no SLURM cluster to submit to")
    assert json.loads((sweep_dir / "command.json").read_text()) == command and len(list(sweep_dir.iterdir())) == 1


def test_sweeps_top_level_out_dir_is_the_sweep_directory(tmp_path):
    proc = run_cli("-m", "sweeps", "sweep=demo", f"out_dir={tmp_path / 'mine'}", "dry_run=true", env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sweep demo: {tmp_path / 'mine'}" in proc.stdout


@pytest.mark.parametrize("command", [["train"], ["sweeps"], ["train.export"], ["analysis"]])
def test_every_cli_has_help(command):
    proc = run_cli("-m", *command, "--help")
    assert proc.returncode == 0 and proc.stdout.strip() and not proc.stderr.strip(), proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower() or f"python -m {command[0]}" in proc.stdout


@pytest.mark.parametrize("name,content,expected", ANALYSIS, ids=[c[0] for c in ANALYSIS])
def test_analysis(tmp_path, name, content, expected):
    path = tmp_path / "results.csv"
    if content is not None:
        path.write_text(content)
    proc = run_cli("-m", "analysis", "fit", str(path), "--out", str(tmp_path / "fit"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_error_line(proc.stderr, expected.format(csv=path))
    assert not (tmp_path / "fit" / "fit.json").exists()


@pytest.mark.parametrize("name,content,expected", ANALYSIS_ROWS, ids=[c[0] for c in ANALYSIS_ROWS])
def test_analysis_invalid_rows(tmp_path, name, content, expected):
    path = tmp_path / "results.csv"
    path.write_text(content)
    proc = run_cli("-m", "analysis", "fit", str(path), "--out", str(tmp_path / "fit"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: 1 invalid row(s)") and f"{path}:2: {expected}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "fit" / "fit.json").exists()
