"""The web viewer: it serves viser's page on a free loopback port and refuses a busy one, its
render API returns images of the asked size that equal the renderer's, and headless Chromium
shows the rendered scene on the page's canvas."""

import io
import urllib.request

import gin
import numpy as np
import pytest
from PIL import Image

from jaxnerf360.data.cameras import scene_view
from jaxnerf360.errors import UserError
from jaxnerf360.rendering import Renderer
from jaxnerf360.viewer import Viewer, free_port, gl_to_viser, viser_to_gl
from tests import browser
from tests.test_export import box_field


@pytest.fixture
def box(synthetic_dir):
    # A black background, so that a page showing the render differs from a blank one.
    yield box_field(synthetic_dir, "Config.background = 'black'")
    gin.clear_config()


def _viewer(box, **kwargs):
    model, state, scene, mesh = box
    viewer = Viewer(model, scene, mesh, "black", free_port(), chunk=4096, **kwargs)
    viewer.update(state, step=7, psnr=12.5)
    return viewer


def test_the_server_serves_its_page_and_refuses_a_busy_port(box):
    viewer = _viewer(box)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10).read()
        assert page.lower().startswith(b"<!doctype html>")
        assert viewer.status.content == "step 7  PSNR 12.50 dB"
        model, _, scene, mesh = box
        with pytest.raises(UserError, match=f"viewer port {viewer.port} on 127.0.0.1 is in use"):
            Viewer(model, scene, mesh, port=viewer.port)
    finally:
        viewer.close()


def test_render_requests_return_images_of_the_asked_size(box):
    model, state, scene, mesh = box
    viewer = _viewer(box)
    try:
        view = scene_view(scene, 0)
        fov = 2 * np.arctan(0.5 * scene.height / scene.intrinsics[0, 1])
        rgb = viewer.render(view.camtoworld, fov, scene.width, scene.height)
        want = Renderer(model, mesh, "black", 4096).image(state, view)["rgb"]
        np.testing.assert_allclose(rgb, np.clip(want, 0, 1), atol=1e-4)  # focal via the fov
        for mode in ("rgb", "depth", "opacity"):
            image = viewer.render(view.camtoworld, fov, 40, 30, mode)
            assert image.shape == (30, 40, 3) and 0 <= image.min() and image.max() <= 1
        with pytest.raises(UserError, match="render mode 'normals' is unknown"):
            viewer.render(view.camtoworld, fov, 40, 30, "normals")
    finally:
        viewer.close()
    # viser's cameras are OpenCV-style: the conversion goes there and back.
    wxyz, position = gl_to_viser(scene.camtoworlds[2])
    np.testing.assert_allclose(viser_to_gl(wxyz, position), scene.camtoworlds[2], atol=1e-6)


@pytest.mark.skipif(browser.chromium() is None, reason="Debian's chromium is not installed")
def test_headless_chromium_shows_the_rendered_scene(box):
    """The page connects, the viewer renders the browser's camera at full resolution and the
    canvas shows it: mostly the black background of the render (a blank page is light), with
    the box's pixels where the render has them."""
    import time

    viewer = _viewer(box, resolution=64)
    page = browser.Page(f"http://127.0.0.1:{viewer.port}/", free_port(), 900, 600)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and 64 not in viewer.rendered().values():
            time.sleep(0.5)
        assert 64 in viewer.rendered().values(), viewer.rendered()
        time.sleep(3)  # the image reaches the page, which paints it
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"),
                          np.float32) / 255
    finally:
        page.close()
        viewer.close()
    centre = shot[150:550, 150:600]  # below the notices, left of the side panel
    assert np.mean(centre.max(-1) < 0.15) > 0.5  # the render's black background
    assert np.mean(centre.max(-1) > 0.3) > 0.01  # and the box on it


def test_training_serves_the_viewer_on_its_port(tmp_path):
    """Config.viewer_port: the page is served while the run trains, and the run finishes."""
    import subprocess
    import sys
    import time

    from tests.cli_env import cli_env
    from tests.test_cli import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={ROOT}/configs/debug.gin",
         f"--gin_bindings=Config.data_dir='{tmp_path / 'scene'}'",
         f"--gin_bindings=Config.checkpoint_dir='{tmp_path / 'run'}'",
         "--gin_bindings=Config.max_steps=100", f"--gin_bindings=Config.viewer_port={port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env())
    served = False
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not served:
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            served = page.lower().startswith(b"<!doctype html>")
        except OSError:
            time.sleep(0.5)
    _, stderr = proc.communicate(timeout=600)
    assert served and proc.returncode == 0, stderr[-3000:]
    assert f"viewer at http://127.0.0.1:{port}" in stderr and "step 100/100" in stderr
