"""The notebook runs top to bottom on synthetic data; a cell error fails the build."""

import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def test_notebook_executes(tmp_path, monkeypatch):
    env = {"NB_DATASET": "synthetic", "NB_TRAIN_SIZE": "1024", "NB_TEST_SIZE": "256", "NB_VAL_SIZE": "256",
           "NB_EPOCHS": "2", "NB_SEEDS": "2", "NB_OUT": str(tmp_path / "out")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits this process's environment
    nb = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "diff vs standard [95% CI]" in outputs  # the summary table printed
    assert "alternating-25" in outputs and "late-freeze[after=0.75]" in outputs  # the example plugin ran
    assert "tiny-convnet" in outputs and (tmp_path / "out_convnet" / "runs" / "gradual-unfreezing__seed1.json").exists()
    assert (tmp_path / "out" / "comparison_results.png").exists()
    assert (tmp_path / "out" / "alternation_period.png").exists()
    # the second experiment kept the first one's strategies in the folder's summary
    import json
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["strategies"]) == {"standard", "alternating-epoch", "alternating-batch", "alternating-25"}
    assert (tmp_path / "out_sweep" / "sweep_results.png").exists() and "tuned comparison" in outputs


def test_notebook_defines_no_model_or_loop():
    nb = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for forbidden in ("class ", "nn.Module", "loss.backward", "optimizer.step", "nn.Linear"):
        assert forbidden not in source, forbidden
    assert "from tqdm import tqdm" not in source


def test_the_stored_notebook_carries_no_widget_outputs():
    """Progress is plain text or nothing in a notebook: no frozen widget bars on a code host."""
    nb = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {})
            assert "\r" not in o.get("text", "") and "it/s]" not in o.get("text", "")
    assert "widgets" not in nb.metadata  # no saved widget state (frozen bars) either
