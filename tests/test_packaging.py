"""Packaging: the wheel installs everything under `edgebench.*` (nothing generic such as `models` lands in
site-packages), carries its package data, and does not shadow (or get shadowed by) a user's own `models`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GENERIC = ("models", "bench", "backends", "targets", "reports")


def package_dirs() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-dir"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (building in place would write build/ into the repo)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    for folder in package_dirs().values():
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [whl] = list(dist.glob("edgebench-*.whl"))
    return whl


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site") / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@pytest.fixture
def user_project(tmp_path) -> Path:
    """A user's working folder with its own top-level `models` package."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text('MARKER = "user"\n')
    return tmp_path


def test_wheel_holds_only_the_edgebench_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
    assert dist_info and all(n.split("/")[0].startswith("edgebench-") for n in dist_info)
    outside = [n for n in names if not n.startswith("edgebench/") and n not in dist_info]
    assert outside == []
    assert not any(n.split("/")[0] in GENERIC for n in names)
    for n in dist_info:
        if n.endswith("top_level.txt"):
            assert zipfile.ZipFile(wheel).read(n).decode().split() == ["edgebench"]


def test_wheel_holds_every_module_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "edgebench/bench/suites/default.yaml" in names
    recipes = sorted(p.name for p in (REPO / "models" / "recipes").glob("*.yaml"))
    assert recipes  # the repository has a recipe library
    for r in recipes:
        assert f"edgebench/models/recipes/{r}" in names
    for package, folder in package_dirs().items():
        for py in (REPO / folder).glob("*.py"):
            assert f"{package.replace('.', '/')}/{py.name}" in names


def test_installed_wheel_beside_a_user_models_package(site, user_project):
    code = (
        "import json, models, edgebench.models.zoo as zoo, edgebench.models.recipes as recipes\n"
        "from edgebench.bench.config import load_suite\n"
        "print(json.dumps({'marker': getattr(models, 'MARKER', None), 'models_file': models.__file__,\n"
        "  'zoo_file': zoo.__file__, 'recipes': recipes.builtin_names(), 'default_suite': load_suite(None).suite.name}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=user_project, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["marker"] == "user"
    assert Path(info["models_file"]).resolve() == (user_project / "models" / "__init__.py").resolve()
    assert Path(info["zoo_file"]).resolve().is_relative_to(site.resolve())
    assert "dense" in info["recipes"] and "l1-unstructured-50" in info["recipes"]  # package data found in site
    assert info["default_suite"] == "default"


def test_installed_wheel_adds_no_generic_top_level_names(site, tmp_path):
    # bin/ holds the console script; every importable name is under edgebench/
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == ["edgebench"]
    assert (site / "bin" / "edgebench").exists()
    code = ("import importlib.util, json\n"
            f"print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {list(GENERIC)!r}}}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {n: False for n in GENERIC}


def test_editable_install_beside_a_user_models_package(user_project):
    code = ("import json, models, edgebench.models.recipes as r\n"
            "print(json.dumps({'marker': getattr(models, 'MARKER', None), 'recipes_file': r.__file__, 'library': str(r.LIBRARY)}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=user_project, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["marker"] == "user"
    assert Path(info["recipes_file"]).resolve() == (REPO / "models" / "recipes.py").resolve()
    assert Path(info["library"]).resolve() == (REPO / "models" / "recipes").resolve()


def test_wheel_ships_the_store_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = REPO / "bench" / "migrations"
    shipped = sorted(p.relative_to(migrations).as_posix() for p in migrations.rglob("*.py"))
    assert "env.py" in shipped and any(s.startswith("versions/0001") for s in shipped)
    for rel in shipped + ["script.py.mako"]:
        assert f"edgebench/bench/migrations/{rel}" in names


def test_installed_wheel_upgrades_an_edgebench_01_store_in_place(site, tmp_path):
    old = tmp_path / "old.sqlite"
    shutil.copy(REPO / "tests" / "bench" / "data" / "store-v1.sqlite", old)
    code = ("import json, sys, edgebench.bench.store as m\n"
            "s = m.Store(sys.argv[1])\n"
            "print(json.dumps({'revision': s.revision(), 'head': m.HEAD, 'file': m.__file__, 'runs': [r.id for r in s.runs()]}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(old)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(site.resolve())  # the wheel's migrations ran, not the repository's
    assert info["revision"] == info["head"]
    assert info["runs"] == ["20261102-020000-bbbb", "20261101-020000-aaaa"]
