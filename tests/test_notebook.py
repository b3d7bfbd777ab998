"""The Colab quickstart notebook runs top to bottom (on a shortened schedule) and shows the
training curve, a test view and the video."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path, synthetic_dir):
    notebook = nbformat.read(ROOT / "notebooks" / "colab_quickstart.ipynb", as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = "\n".join([
        'REPO = ""', 'CONFIG = "configs/debug.gin"', f'RUN_DIR = "{tmp_path / "run"}"',
        f'SCENE_DIR = "{synthetic_dir}"', "MAX_STEPS = 10", "RENDER_FRAMES = 3"])
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    # The kernel runs this interpreter's environment (the tests' JAX set-up).
    client.execute(env=cli_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    kinds = [k for o in outputs for k in o.get("data", {})]
    assert kinds.count("image/png") >= 3  # the curve, the test view and its depth
    assert any("<video" in o.get("data", {}).get("text/html", "") for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "test PSNR" in text
    assert (tmp_path / "run" / "render" / "rgb.mp4").is_file()
