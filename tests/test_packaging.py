"""The project's set-up files agree with each other (conda users, pip users, CI and the README)."""
import importlib
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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
    expected = project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["align"]
    env, pip_list = _conda_pip_list()
    listed = [r for r in pip_list if not r.startswith("-e")]
    norm = lambda reqs: sorted(str(Requirement(r)) for r in reqs)  # noqa: E731
    assert norm(listed) == norm(expected), "environment.yml's pip list drifted from pyproject.toml"
    assert "-e .[dev,align]" in pip_list


def test_conda_python_satisfies_requires_python():
    env, _ = _conda_pip_list()
    py = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert py, "environment.yml must pin python"
    version = py[0].split("=", 1)[1]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version + ".0")


def test_torch_pins_admit_the_local_wheels():
    reqs = {Requirement(r).name: Requirement(r) for r in _pyproject()["project"]["dependencies"]}
    assert reqs["torch"].specifier.contains("2.14.1")
    assert reqs["torchvision"].specifier.contains("0.29.1")
    assert not reqs["torch"].specifier.contains("2.15.0"), "a newer torch would be downloaded (GBs)"


def test_readme_and_ci_use_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    for target in ("reproduce:", "test:", "lab:"):
        assert re.search(rf"^{target}", makefile, re.M), target


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
