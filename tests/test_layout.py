"""The architecture holds: train/ imports only downward (never sweeps/ or analysis/), has no import
circles, keeps its planning layer free of torch, and README's layout table names the real folders."""
import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "train"


def train_modules() -> dict[str, Path]:
    modules = {}
    for path in TRAIN.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported_names(path: Path, module: str, known: dict) -> set[str]:
    """Every module this file imports (top level or inside functions), as dotted names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known.keys()
            # `from pkg import submodule` depends on the submodule; `from pkg import name`, on pkg
            names |= submodules if len(submodules) == len(node.names) else {target} | submodules
    return names


def test_train_never_imports_sweeps_or_analysis():
    modules = train_modules()
    upward = [(m, name) for m, path in modules.items() for name in imported_names(path, m, modules)
              if name.split(".")[0] in ("sweeps", "analysis")]
    assert upward == []


def test_train_has_no_import_circles():
    modules = train_modules()
    graph = {m: {n for n in imported_names(p, m, modules) if n in modules and n != m} for m, p in modules.items()}
    # a module that reaches itself through its imports is in a circle
    circles = []
    for start in graph:
        seen, frontier = set(), list(graph[start])
        while frontier:
            node = frontier.pop()
            if node == start:
                circles.append(start)
                break
            if node not in seen:
                seen.add(node)
                frontier.extend(graph[node])
    assert circles == []


def test_train_top_level_stays_small():
    top = [p.name for p in TRAIN.glob("*.py")]
    assert len(top) <= 12, top
    for package in ("plan", "model", "data", "run", "tracking"):
        init = TRAIN / package / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"train/{package}: needs a docstring"


def test_planning_layer_imports_without_torch():
    code = "import sys, train.plan, sweeps.grid, analysis.pipeline; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_readme_layout_table_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = {re.search(r"`([a-z_/]+)`", cell).group(1) for cell in first_cells}
    for folder in named:
        assert (REPO / folder).is_dir(), f"README names {folder}, which does not exist"
    for package in ("plan", "model", "data", "run", "tracking"):
        assert f"train/{package}/" in named, f"README's layout table does not name train/{package}/"
    for top in ("configs", "train", "sweeps", "analysis", "scripts", "tests", "hydra_plugins"):
        assert f"{top}/" in named, f"README's layout table does not name {top}/"
