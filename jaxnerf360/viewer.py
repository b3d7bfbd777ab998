"""A live web viewer (viser): the training cameras, and the scene rendered from the browser's.

`Viewer(model, scene, mesh, ...)` serves viser's page on a loopback port: the training cameras
as frustums with their images, and, behind them, the field rendered from each connected
browser's camera. The render resolution adapts: a quarter of `resolution` (the image height)
while the camera moves, then the full one once it has been still for `settle` seconds. A
render-mode control (rgb, depth, opacity), a resolution slider, the step and PSNR of a
training run, and a camera-path recorder (keyframes written as nerfstudio's camera-path JSON,
`camera_path_file`) sit in the side panel.

Rendering runs on a thread of its own and never holds the training loop: `update` hands over
a copy of the latest state, and the thread renders for at most `budget` of the wall time
(it sleeps in proportion after each render), so a training run slows by about that fraction
at most while a browser is watching, and not at all otherwise.
"""

import socket
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import viser
import viser.transforms as vtf
from absl import logging

from jaxnerf360 import camera_path_file, outputs
from jaxnerf360.data.cameras import View
from jaxnerf360.errors import UserError
from jaxnerf360.rendering import Renderer, per_output_pixel

MODES = ("rgb", "depth", "opacity")
_FLIP = np.diag([1.0, -1.0, -1.0])  # OpenGL <-> OpenCV camera axes (viser's are OpenCV's)


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gl_to_viser(camtoworld) -> tuple:
    """(wxyz, position) of an OpenGL camera-to-world `[3, 4]` in viser's OpenCV convention."""
    rotation = np.asarray(camtoworld, np.float64)[:3, :3] @ _FLIP
    return vtf.SO3.from_matrix(rotation).wxyz, np.asarray(camtoworld, np.float64)[:3, 3]


def viser_to_gl(wxyz, position) -> np.ndarray:
    """The OpenGL camera-to-world `[3, 4]` of a viser camera (OpenCV convention)."""
    rotation = vtf.SO3(np.asarray(wxyz, np.float64)).as_matrix() @ _FLIP
    return np.concatenate([rotation, np.asarray(position, np.float64)[:, None]], axis=1)


class Viewer:
    """The viewer of one scene (see the module docstring)."""

    def __init__(self, model, scene, mesh, background: str = "white", port: int = 8080,
                 host: str = "127.0.0.1", chunk: int = 4096, resolution: int = 128,
                 budget: float = 0.25, settle: float = 0.3, max_cameras: int = 100):
        if not port_free(host, port):
            raise UserError(f"viewer port {port} on {host} is in use; choose another "
                            "(--port or Config.viewer_port)")
        self.scene, self.budget, self.settle = scene, float(budget), float(settle)
        self.renderer = Renderer(model, mesh, background, chunk)
        # Small images get a renderer of a smaller chunk: padding a 32-pixel-high view to a
        # full chunk would make it cost as much as a large one. One compile per size.
        self._renderers = {self.renderer.chunk: self.renderer}
        self._make_renderer = lambda size: Renderer(model, mesh, background, size)
        self._compiled = set()  # (chunk, height, width, mode) rendered at least once
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.port, self.host = port, host
        self._state, self._lock = None, threading.Lock()
        self._clients = {}  # id -> {'camera': (wxyz, pos, fov, aspect), 'moved': t, 'done': h}
        self._keyframes = []
        self._add_cameras(max_cameras)
        gui = self.server.gui
        self.mode = gui.add_dropdown("Render mode", MODES, initial_value="rgb")
        self.resolution = gui.add_slider("Resolution", min=32, max=1024, step=16,
                                         initial_value=int(resolution))
        self.status = gui.add_markdown("waiting for a trained state")
        record = gui.add_button("Add keyframe")
        self.path_file = gui.add_text("Camera path file", initial_value="camera_path.json")
        save = gui.add_button("Save camera path")
        record.on_click(lambda event: self._keyframes.append(self._camera_of(event.client)))
        save.on_click(lambda event: self.save_path(self.path_file.value))
        for control in (self.mode, self.resolution):
            control.on_update(lambda _: self.refresh())
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(lambda c: self._clients.pop(c.client_id, None))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # --- scene and clients ---

    def _add_cameras(self, most: int) -> None:
        scene = self.scene
        picks = np.unique(np.linspace(0, scene.num_images - 1, min(most, scene.num_images))
                          .round().astype(int))
        fov = 2 * np.arctan(0.5 * scene.height / scene.intrinsics[0, 1])
        spread = np.linalg.norm(np.ptp(scene.camtoworlds[:, :3, 3], axis=0))
        step = max(1, scene.height // 64)
        for i in picks:
            wxyz, position = gl_to_viser(scene.camtoworlds[i])
            self.server.scene.add_camera_frustum(
                f"/cameras/{i}", fov=float(fov), aspect=scene.width / scene.height,
                scale=0.02 * max(spread, 1e-3), thickness=1.5, thickness_units="screen",
                image=outputs.to_uint8(scene.images[i, ::step, ::step, :3]), wxyz=wxyz,
                position=position)

    def _connect(self, client) -> None:
        # Start a little behind the first training camera (outside its frustum), so the scene
        # is in view.
        pose = np.array(self.scene.camtoworlds[0], np.float64)
        spread = np.linalg.norm(np.ptp(self.scene.camtoworlds[:, :3, 3], axis=0))
        pose[:, 3] += 0.05 * max(spread, 1e-3) * pose[:, 2]  # +z: backwards in OpenGL
        wxyz, position = gl_to_viser(pose)
        client.camera.wxyz, client.camera.position = wxyz, position
        client.camera.fov = float(2 * np.arctan(0.5 * self.scene.height /
                                                self.scene.intrinsics[0, 1]))
        self._clients[client.client_id] = {"client": client, "moved": time.time(), "done": 0}
        client.camera.on_update(lambda camera: self._moved(client.client_id))

    def _moved(self, client_id) -> None:
        if client_id in self._clients:
            self._clients[client_id].update(moved=time.time(), done=0)

    def refresh(self, moving: bool = False) -> None:
        """Renders every browser's view again (as after a camera move, with `moving`)."""
        for entry in self._clients.values():
            entry["done"] = 0
            if moving:
                entry["moved"] = time.time()

    def rendered(self) -> dict:
        """{client id: the image height last sent to that browser (0: none yet)}."""
        return {key: entry["done"] for key, entry in self._clients.items()}

    @staticmethod
    def _camera_of(client) -> tuple:
        camera = client.camera
        return (np.asarray(camera.wxyz), np.asarray(camera.position), float(camera.fov),
                float(camera.aspect))

    # --- state and rendering ---

    def update(self, state, step: int | None = None, psnr: float | None = None) -> None:
        """Shows `state` from now on (a copy: the train step may reuse the buffers)."""
        copy = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
        with self._lock:
            self._state = copy
        parts = [f"step {step}" if step is not None else "", f"PSNR {psnr:.2f} dB"
                 if psnr is not None else ""]
        self.status.content = "  ".join(p for p in parts if p) or "trained state"
        self.refresh()

    def render(self, camtoworld, fov: float, width: int, height: int, mode: str = "rgb"):
        """`[height, width, 3]` float image of the current state from an OpenGL camera with a
        vertical field of view `fov` (radians), in `mode` (rgb, depth or opacity)."""
        if mode not in MODES:
            raise UserError(f"render mode {mode!r} is unknown; choose one of {list(MODES)}")
        with self._lock:
            state = self._state
        if state is None:
            raise UserError("the viewer has no state to render yet")
        k = self.renderer.upsample
        width, height = max(k, width // k * k), max(k, height // k * k)
        focal = 0.5 * height / np.tan(0.5 * fov)
        view = View(camtoworld=np.asarray(camtoworld, np.float32)[:3, :4],
                    intrinsics=np.array([focal, focal, width / 2, height / 2], np.float32),
                    width=width, height=height, near=self.scene.near, far=self.scene.far,
                    ndc=self.scene.ndc)
        out = self._renderer_for(width * height // (k * k)).image(state, view)
        if mode == "rgb":
            return np.clip(out["rgb"], 0, 1)
        per_pixel = {name: per_output_pixel(out[name], k)
                     for name in ("distance_median", "acc")}
        if mode == "opacity":
            image = per_pixel["acc"]
        else:
            image = outputs.depth_to_image(per_pixel["distance_median"], per_pixel["acc"])
        return np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)

    def _renderer_for(self, rays: int) -> Renderer:
        """The renderer whose chunk is the smallest power of two holding `rays` (at least 1024,
        at most the configured chunk)."""
        chunk = min(self.renderer.chunk, 1 << max(10, (int(rays) - 1).bit_length()))
        if chunk not in self._renderers:
            self._renderers[chunk] = self._make_renderer(chunk)
        return self._renderers[chunk]

    def _render_client(self, entry, height: int) -> float:
        """Renders one browser's view; the seconds it took, or 0 when it included a compile
        (which the budget does not count, so the first view is not followed by a long wait)."""
        wxyz, position, fov, aspect = self._camera_of(entry["client"])
        width = max(1, round(height * aspect))
        start = time.perf_counter()
        image = self.render(viser_to_gl(wxyz, position), fov, width, height, self.mode.value)
        entry["client"].scene.set_background_image(outputs.to_uint8(image), format="jpeg")
        seconds = time.perf_counter() - start
        logging.debug("viewer: rendered %dx%d in %.3f s", image.shape[1], image.shape[0],
                      seconds)
        key = (image.shape[0], image.shape[1], self.mode.value)
        first = key not in self._compiled
        self._compiled.add(key)
        return 0.0 if first else seconds

    def _loop(self) -> None:
        while not self._stop.is_set():
            spent = 0.0
            if self._state is not None:
                for entry in list(self._clients.values()):
                    full = int(self.resolution.value)
                    still = time.time() - entry["moved"] > self.settle
                    want = full if still else max(16, full // 4)
                    if entry["done"] < want:
                        try:
                            spent += self._render_client(entry, want)
                        except Exception as e:  # noqa: BLE001 (a client gone mid-render)
                            logging.warning("viewer: render failed (%s: %s)", type(e).__name__,
                                            e)
                        entry["done"] = want
            # Stay within the budget: after s seconds of rendering, idle s (1 - b) / b.
            idle = spent * (1 - self.budget) / max(self.budget, 1e-3)
            self._stop.wait(max(0.02, idle))

    # --- camera paths ---

    def save_path(self, path: str, fps: int = 30) -> int:
        """Writes the recorded keyframes as a camera-path file; returns their number."""
        if not self._keyframes:
            return 0
        poses = np.stack([viser_to_gl(w, p) for w, p, _, _ in self._keyframes])
        fov, aspect = self._keyframes[0][2], self._keyframes[0][3]
        height = int(self.resolution.value)
        camera_path_file.write(path, poses, self.scene.transform, round(height * aspect),
                               height, float(np.degrees(fov)), fps)
        return len(self._keyframes)

    def close(self) -> None:
        """Stops the render thread and the server."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.stop()
