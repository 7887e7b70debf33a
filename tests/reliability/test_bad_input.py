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
]
TRAIN_WITH_FILES = [  # cases that need files made by the `files` fixture ({name} is filled in)
    ("empty corpus", ["data=text", "data.vocab_size=512", "data.paths=[{empty}]"], "error: data.paths: the corpus is empty"),
    ("corpus too small to split", ["data=text", "data.vocab_size=512", "data.paths=[{one_line}]"], "error: data: the corpus has 1 document(s)"),
    ("prepared data, other vocabulary", ["data.source=prepared", "data.paths=[{prepared}]", "data.vocab_size=1024"], "error: data.vocab_size: 1024 does not match the prepared data's vocab_size 512"),
    ("prepared data, other tokenizer", ["data.source=prepared", "data.paths=[{retokenized}]"], "error: data.tokenizer: "),
    ("out_dir of another run", ["out_dir={reference}", "seed=1"], "error: out_dir: "),
]
SWEEPS = [
    ("no preset", [], "error: sweep: choose a preset"),
    ("unknown preset", ["sweep=nosuch"], "error: sweep: unknown sweep 'nosuch'"),
    ("launcher without its plugin", ["sweep=demo", "hydra/launcher=ray"], "error: hydra/launcher: unknown launcher 'ray'"),
    ("unknown sweep key", ["sweep=demo", "sweep.bogus=1"], "error: sweep.bogus: unknown config key"),
    ("budget list, not numbers", ["sweep=demo", "sweep.budgets=[abc]"], "error: sweep.budgets: value 'abc' of type 'str' could not be converted to Float"),
    ("negative budget in the list", ["sweep=demo", "sweep.budgets=[-1e10]"], "error: sweep.budgets: every budget must be a positive finite number"),
    ("too few sizes", ["sweep=demo", "sweep.sizes_per_budget=0"], "error: sweep.sizes_per_budget: need at least 3 sizes"),
    ("span below 1", ["sweep=demo", "sweep.span=0.5"], "error: sweep.span: must be > 1"),
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


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference):
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
    return {"empty": root / "empty.txt", "one_line": root / "one_line.txt", "prepared": root / "prepared",
            "retokenized": root / "retokenized", "reference": reference}


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
    args = [a.format(**files) for a in args]
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
