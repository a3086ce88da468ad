"""A method owns its options: the OPTIONS / PRESETS / NATIVE_RECIPE literals at the top of its file become
TrainConfig fields, flags, checks, presets and native recipes (docs/METHOD.md §14), read without importing
the file."""
from __future__ import annotations

import ast
import dataclasses
import textwrap

import pytest

from adadf_core import cli, config
from adadf_core.config import (CommonConfig, METHODS_DIR, NATIVE_RECIPES, PRESETS, TrainConfig, config_class,
                               make_config, method_files, method_options, resolve_config, validate_config)

TOY = '''
from adadf_core.methods.registry import register_method

OPTIONS_TITLE = "Toy (a toy method)"
OPTIONS = {
    "toy_gain": (2.0, "a value in (0, 5]", "gain of the toy loss"),
    "toy_mode": ("soft", ("soft", "hard"), "soft | hard"),
    "toy_warmup": (3, "an integer >= 1", "warm-up epochs"),
}
PRESETS = {"synthfer": {"toy_warmup": 1}}
NATIVE_RECIPE = {"batch_size": 32, "toy_mode": "hard"}


@register_method("toy")
class ToyMethod:
    pass
'''


def _folder(tmp_path, name="methods", **files):
    folder = tmp_path / name
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


def test_a_method_file_s_options_become_fields_with_their_defaults_checks_presets_and_recipe(tmp_path):
    folder = _folder(tmp_path, toy=TOY, helper="X = 1\n")
    (toy,) = method_files(folder)                                 # helper.py registers nothing: not a method file
    assert toy.names == ("toy",) and toy.presets == {"synthfer": {"toy_warmup": 1}}
    assert toy.native_recipe == {"batch_size": 32, "toy_mode": "hard"}
    cls = config_class(method_options(folder))
    cfg = cls()
    assert (cfg.toy_gain, cfg.toy_mode, cfg.toy_warmup) == (2.0, "soft", 3)
    assert {f.name for f in dataclasses.fields(CommonConfig)} < {f.name for f in dataclasses.fields(cls)}
    gain, mode, warmup = method_options(folder)
    assert gain.section == "Toy (a toy method)" and gain.help == "gain of the toy loss"
    assert [gain.accepts(v) for v in (5.0, 0.001, 0.0, 5.5, float("nan"), True)] == [1, 1, 0, 0, 0, 0]
    assert [mode.accepts(v) for v in ("hard", "Hard")] == [True, False]
    assert mode.expected == "one of soft, hard"
    assert [warmup.accepts(v) for v in (1, 0, 1.0, True)] == [True, False, False, False]


@pytest.mark.parametrize("spec, accepted, refused", [
    ("an integer >= 0", [0, 7], [-1, 0.5, False]),
    ("a finite value", [-3.5, 0, 1e9], [float("inf"), float("nan"), "1", None]),
    ("a finite value >= 0", [0, 0.0, 2.5], [-1e-9, float("inf")]),
    ("a finite value > 0", [1e-12, 3], [0, 0.0, -1]),
    ("a value in (0, 1)", [0.5], [0, 1]),
    ("a value in [0, 1)", [0, 0.999], [1, -0.1]),
    ("a value in (0, 1]", [1, 1e-6], [0]),
    ("a value in [-1, 1]", [-1, 1, 0], [1.01, -1.5]),
    (("a", "b"), ["a", "b"], ["c", None]),
])
def test_every_form_of_what_an_option_accepts_checks_what_it_says(spec, accepted, refused):
    option = config.MethodOption("x", accepted[0], spec, "", "", "toy.py")
    assert all(option.accepts(v) for v in accepted), [v for v in accepted if not option.accepts(v)]
    assert not any(option.accepts(v) for v in refused), [v for v in refused if option.accepts(v)]


@pytest.mark.parametrize("options, message", [
    ('{"toy_gain": (2.0, "between 0 and 5", "gain")}', r"toy\.py: OPTIONS\['toy_gain'\]: cannot read 'between 0 "
                                                       r"and 5'.*expected a tuple of choices"),
    ('{"toy_gain": (9.0, "a value in (0, 5]", "gain")}', r"the default 9\.0 is not a value in \(0, 5\]"),
    ('{"toy_gain": (2.0, "a value in (0, 5]")}', r"must be \(default, what it accepts, help text\)"),
    ('{"toy_gain": ([2.0], "a value in (0, 5]", "gain")}', r"an int, float, str or bool default"),
    ('dict(toy_gain=(2.0, "a finite value", "gain"))', r"toy\.py:5: OPTIONS must be a plain literal"),
    ('{"lr": (0.1, "a finite value > 0", "a second learning rate")}', r"option 'lr' is already a field of "
                                                                       r"config\.py \(CommonConfig\)"),
])
def test_an_option_table_that_cannot_be_read_is_refused_naming_the_file_and_the_option(tmp_path, options, message):
    text = TOY.replace(TOY[TOY.index("OPTIONS = {"):TOY.index("PRESETS")], f"OPTIONS = {options}\n")
    folder = _folder(tmp_path, toy=text)
    with pytest.raises(ValueError, match=message):
        method_options(folder)


def test_two_files_cannot_own_one_option_and_options_need_a_registered_method(tmp_path):
    other = TOY.replace('"toy"', '"toy2"').replace("ToyMethod", "Toy2Method")
    with pytest.raises(ValueError, match=r"toy\.py: option 'toy_gain' is already a field of .*other\.py"):
        method_options(_folder(tmp_path, other=other, toy=TOY))
    orphan = TOY[:TOY.index("@register_method")]
    with pytest.raises(ValueError, match=r"orphan\.py: has method options but registers no method"):
        method_files(_folder(tmp_path, "second", orphan=orphan))


def test_the_registry_and_the_option_reader_see_the_same_methods_in_the_same_order():
    from adadf_core.methods import method_names
    assert tuple(n for f in method_files() for n in f.names) == method_names()
    imports = [n for n in ast.walk(ast.parse((METHODS_DIR / "__init__.py").read_text()))
               if isinstance(n, ast.ImportFrom) and n.module == "adadf_core.methods"]
    assert not imports, "methods/__init__.py names method modules: adding a method must be adding its file"


def test_a_method_reads_only_the_common_fields_and_its_own_options():
    common = {f.name for f in dataclasses.fields(CommonConfig)}
    for path in sorted(METHODS_DIR.glob("*.py")):
        own = {o.name for f in method_files() if f.path == str(path) for o in f.options}
        reads = {n.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Attribute))
                 and getattr(n.value, "id", getattr(n.value, "attr", None)) == "cfg"}
        assert reads <= common | own, f"{path.name} reads another method's options: {sorted(reads - common - own)}"


def test_the_comparison_methods_own_their_options_presets_and_recipes():
    owners = {o.name: o.source for o in method_options()}
    assert owners["scn_relabel_epoch"].endswith("scn.py") and owners["slm_beta"].endswith("slm_aea.py")
    assert not any(name.startswith(("scn_", "slm_")) for name in (f.name for f in dataclasses.fields(CommonConfig)))
    assert PRESETS["synthfer"]["scn_relabel_epoch"] == 2 and PRESETS["synthfer"]["slm_beta"] == 1.0
    assert "scn_relabel_epoch" not in PRESETS["raf"]                 # a method's preset is per data set
    assert NATIVE_RECIPES["scn"]["recipe"] == "scn" and NATIVE_RECIPES["slm_aea"]["slm_schedule"] == "cosine"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for f in method_files():
        assert set(f.native_recipe) <= fields and all(set(v) <= fields for v in f.presets.values()), f.path
    assert resolve_config(make_config("synthfer", method="scn", **NATIVE_RECIPES["scn"])).recipe == "scn"


def test_a_method_s_choices_are_the_ones_its_functions_accept():
    from adadf_core.models.aea import EVAL_MEANS
    from adadf_core.ops.scn_ops import SCOPES
    specs = {o.name: o.spec for o in method_options()}
    assert specs["scn_relabel_scope"] == SCOPES and specs["slm_eval_mean"] == EVAL_MEANS


@pytest.mark.parametrize("field, value, expected", [
    ("scn_relabel_scope", "some", "one of all, low"), ("scn_relabel_epoch", 0, "an integer >= 1"),
    ("slm_step", 0.0, "a finite value > 0"), ("slm_alpha", float("inf"), "a finite value"),
])
def test_a_method_option_outside_its_range_is_refused_like_any_field(field, value, expected):
    cfg = dataclasses.replace(resolve_config(make_config("synthfer")), **{field: value})
    with pytest.raises(ValueError, match=rf"^{field}={value!r} is not valid; expected {expected}$"):
        validate_config(cfg)


def test_a_method_s_options_are_a_group_of_train_help_with_flags_that_parse(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "SCN (docs/METHOD.md §12):" in help_text and "--scn-relabel-epoch" in help_text
    args = cli.build_train_parser().parse_args(["--method", "slm_aea", "--slm-schedule", "cosine", "--slm-k", "4"])
    cfg = cli.config_from_args(args)
    assert (cfg.slm_schedule, cfg.slm_k) == ("cosine", 4.0)
