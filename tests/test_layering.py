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
