"""The project's set-up files agree with each other (conda users, pip users, CI and the README)."""
import importlib
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_pip_list():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip section"
    return env, pip_sections[0]


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    expected = project["dependencies"] + extras["dev"] + extras["align"] + extras["export"]
    env, pip_list = _conda_pip_list()
    listed = [r for r in pip_list if not r.startswith("-e")]
    norm = lambda reqs: sorted(str(Requirement(r)) for r in reqs)  # noqa: E731
    assert norm(listed) == norm(expected), "environment.yml's pip list drifted from pyproject.toml"
    assert "-e .[dev,align,export]" in pip_list


def test_license_is_an_spdx_expression_with_its_file():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_conda_python_satisfies_requires_python():
    env, _ = _conda_pip_list()
    py = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert py, "environment.yml must pin python"
    version = py[0].split("=", 1)[1]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version + ".0")


def _upper(spec: SpecifierSet) -> Version:
    bounds = [Version(s.version) for s in spec if s.operator in ("<=", "<")]
    assert bounds, f"{spec} has no upper bound: pip would fetch the newest (CUDA, several GB) build"
    return min(bounds)


def test_torch_and_torchvision_pins_are_a_matching_bounded_pair():
    """Each torchvision release pairs with one torch release (torchvision 0.N+15 <-> torch 2.N): the two
    upper bounds must name a pair, and the installed versions must lie inside the pins."""
    reqs = {Requirement(r).name: Requirement(r) for r in _pyproject()["project"]["dependencies"]}
    torch_top, vision_top = _upper(reqs["torch"].specifier), _upper(reqs["torchvision"].specifier)
    assert (vision_top.major, vision_top.minor) == (0, torch_top.minor + 15), (torch_top, vision_top)
    for name in ("torch", "torchvision"):
        installed = Version(metadata.version(name)).base_version     # 2.14.1+cu130 -> 2.14.1
        assert reqs[name].specifier.contains(installed), f"installed {name} {installed} outside {reqs[name]}"


def _make_dry_run(target: str) -> str:
    done = subprocess.run(["make", "-n", target, "PYTHON=python3"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"make -n {target}: {done.stderr}"
    return done.stdout


def test_readme_commands_are_make_targets_that_run_the_tools():
    """Every `make X` the README shows is a real target, and the two set-up commands reach the tools."""
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"^\s*(?:[A-Z_]+=\S+\s+)*make ([a-z-]+)", readme, re.M))
    assert {"reproduce", "test"} <= targets
    for target in targets:
        _make_dry_run(target)
    assert re.search(r"\.venv/bin/adadf reproduce --dataset synthfer", _make_dry_run("reproduce"))
    assert re.search(r"\.venv/bin/python -m pytest", _make_dry_run("test"))
    ci = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert ci.returncode == 0, ci.stderr
    assert re.search(r"^make test", (ROOT / ".ci" / "run").read_text(), re.M)


def test_make_lab_serves_the_repository_and_ci_installs_the_browser():
    """`make lab` shows the whole repository (results included) and starts on notebooks/; CI installs what
    the browser test needs (chromium by apt, playwright and jupyterlab with the dev extra)."""
    lab = _make_dry_run("lab")
    assert "--notebook-dir=. " in lab and "--LabApp.default_url=/lab/tree/notebooks" in lab, lab
    dev = {Requirement(r).name for r in _pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"playwright", "jupyterlab"} <= dev
    assert "browser" in "".join(_pyproject()["tool"]["pytest"]["ini_options"]["markers"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"apt-get install .*chromium", ci) and ci.index("chromium") < ci.index("\nmake test")


def test_every_cli_command_resolves_to_a_function():
    from adadf_core import cli

    for name, (target, _help) in cli.COMMANDS.items():
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, func_name)), f"{name}: {target} is not callable"


def test_cli_rejects_unknown_command(capsys):
    from adadf_core import cli

    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err
