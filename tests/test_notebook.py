"""The walkthrough notebook: committed without outputs, and runs top to bottom.

The execution test uses the real MovieLens files when ``$BST_DATA_DIR`` or
``<repo>/../shared/data`` holds them, else the notebook generates synthetic data.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "movielens_bst.ipynb"
TIMEOUT_S = 600  # per cell; the whole notebook takes a few minutes on a 2-core CPU


def load_stripper():
    spec = importlib.util.spec_from_file_location(
        "strip_outputs", NOTEBOOK.parent / "strip_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_committed_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert load_stripper().problems(notebook) == [], (
        "run `python notebooks/strip_outputs.py` before committing"
    )
    assert notebook["nbformat"] == 4 and len(notebook["cells"]) > 10


def test_the_documented_launch_command_exists():
    """notebooks/README.md says `pip install -e ".[notebook]"`, then `jupyter lab ...`."""
    import re
    import shutil
    import subprocess

    readme = (NOTEBOOK.parent / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[notebook]"' in readme
    assert re.search(r"^jupyter lab notebooks/movielens_bst.ipynb", readme, re.MULTILINE)
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip('JupyterLab is not installed: python -m pip install -e ".[notebook]"')
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter, "the notebook extra installs the `jupyter` command beside python"
    proc = subprocess.run(
        [jupyter, "lab", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and re.match(r"\d+\.\d+", proc.stdout.strip()), proc.stderr


def test_strip_outputs_round_trip(tmp_path):
    stripper = load_stripper()
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    cell["execution_count"] = 3
    cell["metadata"]["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(notebook), encoding="utf-8")

    assert stripper.main(["--check", str(dirty)]) == 1
    assert stripper.main([str(dirty)]) == 0
    assert stripper.main(["--check", str(dirty)]) == 0
    # Stripping gives back the committed file byte for byte: its layout is Jupyter's.
    assert dirty.read_text(encoding="utf-8") == NOTEBOOK.read_text(encoding="utf-8")


def write_kernel_spec(folder: Path) -> str:
    """A kernel spec that runs this interpreter, whatever kernels the machine has installed."""
    name = "bst-notebook-test"
    spec_dir = folder / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bst test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return name


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbclient  # the dev extra installs these: a missing one must fail, not skip
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    work = tmp_path / "work"
    monkeypatch.setenv("BST_NOTEBOOK_WORKDIR", str(work))  # the kernel inherits it
    kernels = tmp_path / "kernels"
    name = write_kernel_spec(kernels)
    km = KernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        km=km,
        timeout=TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(
        o.get("text", "")
        if o.output_type == "stream"
        else str(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len(pngs) >= 6, f"expected the exploration and evaluation plots, got {len(pngs)} PNGs"
    assert "hr@10" in text.lower()
    assert "python -m bst.train --preset tiny" in text
    assert "Top 10 from the in-process model" in text  # bst.recommend's view
    assert "same movies as the REST answer: True" in text
    for table in ("popularity", "item_transition"):
        assert table in text
    # What the notebook wrote lies under the work folder.
    assert (work / "prepared" / "manifest.json").is_file()
    assert (work / "runs" / "tiny" / "metrics.json").is_file()
    assert any((work / "saved_models" / "bst").glob("*/saved_model.pb"))
