"""isoflop installs as a package: the wheel carries the code, the Hydra configs and the licence, builds
without deprecation warnings, and its console scripts work from any folder of a fresh virtualenv."""
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def listed_packages() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_pyproject_lists_every_package_of_the_tree():
    on_disk = set()
    for top in ("train", "sweeps", "analysis", "hydra_plugins"):
        for init in [REPO / top, *(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if (init == REPO / top or any(init.glob("*.py"))) and "__pycache__" not in init.parts:
                on_disk.add(".".join(init.relative_to(REPO).parts))
    for folder in [REPO / "configs", *(p for p in (REPO / "configs").rglob("*") if p.is_dir())]:
        if any(folder.glob("*.yaml")):
            on_disk.add(".".join(("isoflop_configs", *folder.relative_to(REPO / "configs").parts)))
    assert on_disk == listed_packages()


@pytest.mark.timeout(600)
def test_wheel_installs_into_a_fresh_virtualenv_and_plans_from_another_folder(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("isoflop-*.whl")

    # A fresh virtualenv. Its dependencies (torch and the rest, gigabytes) come from this
    # environment's site-packages through a .pth file; the project itself only from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(venv / "bin" / "isoflop-train"), "model.params=1e5", "budget.flops=3e10",
                           "dry_run=true"], cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["params"]["total"] > 5e4 and plan["steps"] > 0
    where = subprocess.run([str(python), "-c", "import train, isoflop_configs; print(train.__file__); "
                            "print(list(isoflop_configs.__path__)[0])"],
                           cwd=elsewhere, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where  # the wheel's copy, not the checkout
    assert (Path(where[1]) / "sweep" / "demo.yaml").is_file()
    assert list((venv / "lib").glob("python*/site-packages/isoflop-*.dist-info/licenses/LICENSE"))
