"""The web page in a real browser: headless Chromium (Debian's, driven by Playwright) uploads a real
photo and shows its box and label; Chromium's fake camera, fed a video made of real face photos,
drives the webcam path until live labels appear. Screenshots go to outputs/test_artifacts/."""
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package chromium; "
                                                         "`make test` installs it where it can)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (a dev extra)")

ARTIFACTS = Path(__file__).resolve().parents[1] / "outputs" / "test_artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.server import ServeSettings, create_app
    fa = FaceAnalyzer()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(fa, ServeSettings(stream_max_fps=10)), host="127.0.0.1",
                                        port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", fa
    srv.should_exit = True
    t.join(10)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A raw YUV 4:2:0 video (the format Chromium's fake camera reads) of RGB frames."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def camera_video(tmp_path_factory):
    """3 s of the astronaut's real face drifting across a 640x480 frame."""
    face = cv2.resize(data.astronaut(), (360, 360), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(30):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x, y = 40 + 6 * i, 60
        canvas[y:y + 360, x:x + 360] = face
        frames.append(canvas)
    return write_y4m(tmp_path_factory.mktemp("cam") / "faces.y4m", frames)


def launch(p, extra=()):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS + list(extra))


def test_photo_upload_draws_box_and_label(server, tmp_path):
    url, fa = server
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    want = fa.analyze(str(photo))[0]
    hosts = set()
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(url + "/")
        sync_api.expect(page.locator("#model-info")).to_contain_text("Model:")
        page.set_input_files("#file", str(photo))
        label = page.wait_for_selector(".face-box .face-label", timeout=30000)
        assert label.inner_text().startswith(want["label"])
        # the drawn box lies where the API's box is, in the displayed image's pixels
        img = page.eval_on_selector("#photo-img", "e => [e.clientWidth, e.naturalWidth]")
        scale = img[0] / img[1]
        left, top, width = page.eval_on_selector(".face-box", "e => [e.offsetLeft, e.offsetTop, e.offsetWidth]")
        assert abs(left - want["box"][0] * scale) <= 2 and abs(top - want["box"][1] * scale) <= 2
        assert abs(width - (want["box"][2] - want["box"][0]) * scale) <= 3
        assert page.locator(".face-card .bar-row").count() == len(fa.labels)
        page.click(".face-card")
        page.wait_for_selector("#explain:not([hidden])", timeout=30000)
        sync_api.expect(page.locator("#explain-title")).to_have_text("face 1")
        page.wait_for_timeout(300)
        assert page.eval_on_selector("#explain-img", "e => e.naturalWidth") == 192
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_photo.png"), full_page=True)
        browser.close()
    assert hosts == {url.split("/")[2]}, hosts  # every request went to this server


def test_webcam_shows_live_labels(server, camera_video):
    url, fa = server
    with sync_api.sync_playwright() as p:
        browser = launch(p, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                             f"--use-file-for-fake-video-capture={camera_video}"])
        context = browser.new_context(viewport={"width": 1200, "height": 1000})
        context.grant_permissions(["camera"], origin=url)
        page = context.new_page()
        page.goto(url + "/")
        page.click("#cam-start")
        page.wait_for_selector(".live-box .live-label", timeout=30000)
        sync_api.expect(page.locator("#fps")).to_have_text(re.compile(r"^\d+\.\d$"), timeout=30000)
        text = page.inner_text(".live-face")
        assert text.startswith("face #1:") and any(n in text for n in fa.labels), text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_webcam.png"), full_page=True)
        page.click("#cam-stop")
        browser.close()
