"""The package's shape, as docs/ARCHITECTURE.md states it: folders by layer and the directions they may import in,
no import circle (imports inside functions and modules named in strings included), no two modules with one name,
imports at the top unless a comment says why, the training loop in one module, no overlong function or module,
and a module table that lists every module that exists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adadf_core"
ROOT = PACKAGE.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
STRING_IMPORT = re.compile(r"^adadf_core(?:\.\w+)*(?::\w+)?$")     # "adadf_core.x.y" or "adadf_core.x:function"
MODULE_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in_type_checking(node, parents) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _targets(node, package: str, modules) -> list[str]:
    """The package modules an import statement or an import string names."""
    if isinstance(node, ast.Constant):
        return [node.value.split(":")[0]]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the package modules it imports, at any level (function bodies included: a lazy import that
    closes a circle still makes one), through a string (``importlib.import_module("adadf_core.x")``, the CLI's
    ``"adadf_core.x:main"``) too, plus the parent packages whose ``__init__`` such an import runs."""
    modules = modules or _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            is_string = isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and bool(STRING_IMPORT.match(node.value)) and node.value.split(":")[0] in modules
            if not (is_string or isinstance(node, (ast.Import, ast.ImportFrom))) or _in_type_checking(node, parents):
                continue
            for target in _targets(node, package, modules):
                if not target.startswith("adadf_core"):
                    continue
                parts = target.split(".")
                for k in range(2, len(parts) + 1):          # the parent packages run their __init__ first
                    t = ".".join(parts[:k])
                    if t in modules and t != name and not name.startswith(t + "."):
                        graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer_of(module: str) -> str:
    """``adadf_core.data.synthfer.writer`` -> ``data``; a top-level module is its own layer (``cli``, ``config``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "adadf_core"


def allowed_imports() -> dict[str, set[str]]:
    """The table under "## Layers" in docs/ARCHITECTURE.md: layer -> the layers it may import."""
    text = ARCHITECTURE.read_text()
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    out = {}
    for layer, may in re.findall(r"^\| `(\w+)/?(?:\.py)?` \| ([^|]*) \|", table, re.M):
        out[layer] = set(re.findall(r"`(\w+)/?(?:\.py)?`", may))
    return out


def layer_violations(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs == "adadf_core" or theirs == mine:
                continue
            if mine not in allowed:
                bad.append(f"{module}: its layer {mine!r} has no row in docs/ARCHITECTURE.md's layer table")
            elif theirs not in allowed[mine]:
                bad.append(f"{module} imports {target}: {mine} may import only {sorted(allowed[mine]) or 'nothing'}")
    return bad


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_lazy_and_string_imports():
    graph = import_graph()
    assert "adadf_core.methods" in graph["adadf_core.config"]          # config reads the method registry lazily
    assert "adadf_core.runs.reader" in graph["adadf_core.engine.train"]
    assert "adadf_core.pipeline.reproduce" in graph["adadf_core.cli"]   # COMMANDS: "adadf_core.pipeline.reproduce:cli_main"


def test_a_string_import_that_closes_a_circle_is_found(tmp_path):
    pkg = tmp_path / "adadf_core"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from adadf_core.engine.train import fit\n")
    (pkg / "engine" / "train.py").write_text(
        "import importlib\ndef fit():\n    importlib.import_module('adadf_core.cli').main()\n")
    mods = {".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
            for p in pkg.rglob("*.py")}
    cycle = find_cycle(import_graph(mods))
    assert cycle and set(cycle) == {"adadf_core.cli", "adadf_core.engine.train"}


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_layer_imports_only_the_layers_the_architecture_allows():
    allowed = allowed_imports()
    assert {"utils", "data", "engine", "methods", "cli"} <= set(allowed), f"layer table not found: {allowed}"
    layers = {layer_of(m) for m in _modules()} - {"adadf_core"}
    assert layers <= set(allowed), f"layers without a row in the layer table: {sorted(layers - set(allowed))}"
    bad = layer_violations(import_graph(), allowed)
    assert not bad, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(bad)


def test_a_planted_upward_import_is_a_violation():
    graph = {"adadf_core.data.cache": {"adadf_core.engine.train"}, "adadf_core.engine.train": {"adadf_core.data"}}
    assert layer_violations(graph, {"data": {"utils"}, "engine": {"data"}}) == [
        "adadf_core.data.cache imports adadf_core.engine.train: data may import only ['utils']"]


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        if p.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(p.stem, []).append(str(p.relative_to(ROOT)))
    packages = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()}
    twice = {k: v for k, v in seen.items() if len(v) > 1 or k in packages}
    assert not twice, f"module names used twice: {twice}"


def _function_imports(tree):
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def test_imports_inside_functions_say_why():
    """An import inside a function has a comment on its line, or on the line above its group of imports."""
    bad = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        for node in {id(n): n for n in _function_imports(ast.parse("\n".join(lines)))}.values():
            k = node.lineno - 1                                  # index of the import's first line
            while k > 0 and re.match(r"\s*(from \S+ )?import ", lines[k - 1]) and "#" not in lines[k]:
                k -= 1                                           # up through the group of imports
            above = lines[k - 1].strip() if k > 0 else ""
            if "#" not in lines[node.lineno - 1] and "#" not in lines[k] and not above.startswith("#"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "imports inside functions without a comment saying why:\n" + "\n".join(bad)


def test_the_training_loop_lives_in_one_module():
    """backward() and optimiser / scheduler / scaler steps are called in engine/train.py and nowhere else."""
    calls = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("backward", "step", "zero_grad"):
                calls.setdefault(name, []).append(f"{node.func.attr}@{node.lineno}")
    assert set(calls) == {"adadf_core.engine.train"}, f"training-loop calls outside engine/train.py: {calls}"


def test_no_function_over_80_lines():
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines: " + "; ".join(long)


def _module_table() -> dict[str, str]:
    text = ARCHITECTURE.read_text()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)` \| (.*) \|$", table, re.M))


def test_no_module_over_450_lines_without_a_stated_reason():
    table = _module_table()
    long = []
    for path in PACKAGE.rglob("*.py"):
        n = len(path.read_text().splitlines())
        rel = str(path.relative_to(PACKAGE))
        if n > MODULE_LINES and "long:" not in table.get(rel, ""):
            long.append(f"{rel} ({n} lines)")
    assert not long, f"modules over {MODULE_LINES} lines whose row in docs/ARCHITECTURE.md gives no 'long:' reason: {long}"


def test_architecture_table_lists_every_module_and_nothing_else():
    listed = set(_module_table())
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" or p.parent != PACKAGE}
    actual = {a[: -len("/__init__.py")] + "/" if a.endswith("/__init__.py") else a for a in actual}
    assert listed == actual, f"missing from the table: {sorted(actual - listed)}; " \
                             f"listed but absent: {sorted(listed - actual)}"
