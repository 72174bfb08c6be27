"""The house stays layered: each module imports only modules above it in ARCHITECTURE.md's list."""
import ast
import re

from conftest import ROOT


def _order():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("## Modules and data flow", 1)[1].split("```", 2)[1]
    return [m.group(1) for m in re.finditer(r"^ (\w+)\.py", block, re.M)]


def _imports(module):
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_one_below_it_in_the_list():
    order = _order()
    assert order[:5] == ["models", "flops", "data", "plugins", "schedules"] and "pack" in order and order[-1] == "report"
    assert order.index("records") < order.index("training_loop") < order.index("results")
    assert {p.stem for p in ROOT.glob("*.py")} == set(order)  # every module has its place
    for i, module in enumerate(order):
        below = set(order[i:])
        assert not (_imports(module) & below - {module}), (module, _imports(module) & below)


def test_the_store_imports_nothing_from_the_loop():
    """results.py keeps what the loop makes; the history's keys live in records.py, below both."""
    assert not _imports("results") & {"training_loop", "pack", "runs"}


def _string_subscripts(module, key):
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Subscript)
            and isinstance(n.slice, ast.Constant) and n.slice.value == key]


def test_runs_are_typed_records_outside_the_store():
    """Only results.py reads a run's JSON by its keys; every other module reads records.Run's fields (a
    checkpoint's snapshot is the loop's own dict: training_loop, pack and runs read its history)."""
    for module in _order():
        if module != "results":
            assert not _string_subscripts(module, "strategy"), (module, _string_subscripts(module, "strategy"))
    for module in ("stats", "sweep", "plots", "report", "experiments", "launchers"):
        assert not _string_subscripts(module, "history"), (module, _string_subscripts(module, "history"))
