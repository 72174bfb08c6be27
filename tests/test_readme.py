"""The documentation's "use it from your own script" example runs as written, and README names
the test command that CI runs."""
import re

from conftest import ROOT


def _example():
    text = (ROOT / "docs" / "usage.md").read_text()
    section = text.split("## Use it from your own script", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes my_results/ into the current folder
    exec(compile(_example(), "README example", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "mean" in out and "ci95_low" in out
    assert (tmp_path / "my_results" / "metrics.csv").exists()


def test_readme_names_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "python -m pytest -q" in (ROOT / "README.md").read_text()
