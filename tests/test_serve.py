"""`ferlab serve`: every endpoint, every limit, bad bodies, the API key, micro-batching and the stream,
with an in-process client on real photos (scikit-image's astronaut)."""
import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from ferlab.app.analyzer import FaceAnalyzer  # noqa: E402
from ferlab.app.server import MicroBatcher, ServeSettings, create_app, png_bytes  # noqa: E402


@pytest.fixture(scope="module")
def fa():
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def astronaut():
    return png_bytes(data.astronaut())


@pytest.fixture(scope="module")
def two_faces():
    img = data.astronaut()
    return png_bytes(np.ascontiguousarray(np.hstack([img, img[:, ::-1]])))


def client(fa, **settings):
    return TestClient(create_app(fa, ServeSettings(**settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def c(fa):
    with client(fa) as cl:
        yield cl


def assert_error(r, status, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert "Traceback" not in r.text
    if code:
        assert body["error"]["code"] == code, body


def test_analyze_raw_and_multipart_match_the_python_api(c, fa, astronaut):
    want = fa.analyze(data.astronaut())
    for r in (c.post("/v1/analyze", content=astronaut, headers={"Content-Type": "image/png"}),
              c.post("/v1/analyze", files={"file": ("astronaut.png", astronaut, "image/png")})):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["image"] == {"width": 512, "height": 512}
        assert set(body["timings"]) == {"decode_ms", "faces_ms", "model_ms", "total_ms"}
        assert len(body["faces"]) == len(want) == 1
        got, ref = body["faces"][0], want[0]
        assert got["box"] == ref["box"] and got["label"] == ref["label"] == "happiness"
        assert list(got["probs"]) == fa.labels
        assert np.allclose([got["probs"][n] for n in fa.labels], [ref["probs"][n] for n in fa.labels], atol=1e-5)
        assert "landmarks" not in got
    r = c.post("/v1/analyze?landmarks=true", content=astronaut)
    assert np.array(r.json()["faces"][0]["landmarks"]).shape == (68, 2)


def test_batch_serves_good_items_and_reports_bad_ones(c, astronaut):
    r = c.post("/v1/analyze/batch", files=[("files", ("a.png", astronaut, "image/png")),
                                           ("files", ("notes.txt", b"not an image", "text/plain")),
                                           ("files", ("half.png", astronaut[:len(astronaut) // 2], "image/png")),
                                           ("files", ("empty.png", b"", "image/png")),
                                           ("files", ("b.png", astronaut, "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["ok"], body["failed"]) == (2, 3)
    res = body["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3, 4]
    assert res[0]["faces"][0]["label"] == "happiness" and res[4]["faces"] == res[0]["faces"]
    assert [x["error"]["status"] for x in res[1:4]] == [415, 400, 400]
    assert res[1]["filename"] == "notes.txt"


def test_models_health_docs(c, fa):
    m = c.get("/v1/models").json()
    model = m["models"][0]
    assert model["labels"] == fa.labels and model["input"]["img_size"] == fa.pre["img_size"]
    valid = model["accuracy"]["valid"]  # a multi-source model reports each source; FER+ valid above 80 %
    assert valid.get("per_source_accuracy", {}).get("ferplus", valid["accuracy"]) > 0.8
    assert "api_key" not in m["settings"] and m["settings"]["api_key_required"] is False
    assert c.get("/healthz").json()["status"] == "ok"
    docs = c.get("/docs")
    assert docs.status_code == 200
    # the API page works offline: every script, style and icon it names is served by ferlab itself
    import re
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
    for a in assets:
        r = c.get(a)
        assert r.status_code == 200 and len(r.content) > 500, a
    assert c.get("/docs-assets/../../etc/passwd").status_code == 404
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/analyze", "/v1/analyze/batch", "/v1/explain", "/v1/models", "/healthz"} <= set(paths)


def test_explain_returns_a_png_of_the_face(c, astronaut):
    r = c.post("/v1/explain?face=0", content=astronaut)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (192, 192, 3) and img.std() > 10
    assert_error(c.post("/v1/explain?face=3", content=astronaut), 400, "no_such_face")
    assert_error(c.post("/v1/explain?face=-1", content=astronaut), 400, "bad_parameter")


@pytest.mark.parametrize("kind", ["json", "text", "empty", "truncated", "not_image", "multipart_no_file",
                                  "multipart_broken", "batch_not_multipart", "bad_landmarks_flag"])
def test_bad_bodies_get_json_errors_never_500(c, astronaut, kind):
    post = {
        "json": lambda: c.post("/v1/analyze", json={"path": "/etc/passwd"}),
        "text": lambda: c.post("/v1/analyze", content=b"hello", headers={"Content-Type": "text/plain"}),
        "empty": lambda: c.post("/v1/analyze", content=b"", headers={"Content-Type": "image/jpeg"}),
        "truncated": lambda: c.post("/v1/analyze", content=astronaut[:3000], headers={"Content-Type": "image/png"}),
        "not_image": lambda: c.post("/v1/analyze", content=b"\x00" * 500, headers={"Content-Type": "image/png"}),
        "multipart_no_file": lambda: c.post("/v1/analyze", data={"x": "1"}, files={"other": ("a", b"1")}),
        "multipart_broken": lambda: c.post("/v1/analyze", content=b"--zz\r\nnonsense",
                                           headers={"Content-Type": "multipart/form-data; boundary=zz"}),
        "batch_not_multipart": lambda: c.post("/v1/analyze/batch", content=astronaut),
        "bad_landmarks_flag": lambda: c.post("/v1/analyze?landmarks=maybe", content=astronaut),
    }[kind]
    want = {"json": 415, "text": 415, "empty": 400, "truncated": 400, "not_image": 415, "multipart_no_file": 400,
            "multipart_broken": 400, "batch_not_multipart": 415, "bad_landmarks_flag": 400}[kind]
    assert_error(post(), want)


def test_clients_cannot_name_server_files(c, astronaut):
    r = c.post("/v1/analyze/batch", files=[("files", ("../../etc/passwd", astronaut, "image/png"))])
    assert r.json()["results"][0]["filename"] == "passwd"  # a label only, never opened
    r = c.post("/v1/analyze?path=/etc/passwd&file=/etc/passwd", content=astronaut)
    assert r.status_code == 200 and r.json()["faces"][0]["label"] == "happiness"  # such parameters are ignored
    for name in ("../server.py", "..%2Fserver.py", "index.html/../../server.py", "server.py"):
        assert c.get(f"/static/{name}").status_code == 404
    assert c.get("/static/app.js").status_code == 200


def test_upload_and_pixel_limits(fa, astronaut):
    with client(fa, max_upload_bytes=len(astronaut) - 1, max_pixels=512 * 512) as cl:
        assert_error(cl.post("/v1/analyze", content=astronaut), 413, "too_large")
        assert_error(cl.post("/v1/analyze", files={"file": ("a.png", astronaut, "image/png")}), 413, "too_large")
        small = png_bytes(data.astronaut()[::2, ::2])
        assert cl.post("/v1/analyze", content=small).status_code == 200
        big = png_bytes(np.zeros((513, 512, 3), np.uint8))
        assert_error(cl.post("/v1/analyze", content=big), 413, "too_many_pixels")
        r = cl.post("/v1/analyze/batch", files=[("files", ("a.png", astronaut, "image/png")),
                                                ("files", ("s.png", small, "image/png"))])
        assert [x.get("error", {}).get("status") for x in r.json()["results"]] == [413, None]
    with client(fa, max_batch_images=2) as cl:
        r = cl.post("/v1/analyze/batch", files=[("files", (f"{i}.png", astronaut, "image/png")) for i in range(3)])
        assert_error(r, 413, "too_many_images")


def test_declared_length_over_the_limit_is_refused_before_reading(fa):
    with client(fa, max_upload_bytes=1000) as cl:
        r = cl.post("/v1/analyze", content=b"x" * 500, headers={"Content-Length": "99999999"})
        assert r.status_code == 413


def test_faces_per_image_limit(fa, two_faces):
    with client(fa) as cl:
        assert len(cl.post("/v1/analyze", content=two_faces).json()["faces"]) == 2
    with client(fa, max_faces=1) as cl:
        assert len(cl.post("/v1/analyze", content=two_faces).json()["faces"]) == 1


def slow_front(app, seconds):
    service = app.state.service
    real = service.front

    def front(data, name):
        time.sleep(seconds)
        return real(data, name)
    service.front = front


def test_request_time_limit(fa, astronaut):
    app = create_app(fa, ServeSettings(request_timeout_s=0.2))
    slow_front(app, 1.0)
    with TestClient(app) as cl:
        assert_error(cl.post("/v1/analyze", content=astronaut), 504, "timeout")


async def concurrent_posts(app, body, n, path="/v1/analyze"):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
        return await asyncio.gather(*(ac.post(path, content=body) for _ in range(n)))


def test_in_flight_limit_answers_503_with_retry_after(fa, astronaut):
    app = create_app(fa, ServeSettings(max_in_flight=2, retry_after_s=3))
    slow_front(app, 0.5)
    rs = asyncio.run(concurrent_posts(app, astronaut, 5))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503, 503], codes
    for r in rs:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "3" and r.json()["error"]["code"] == "busy"
    app.state.service.close()


def test_api_key(fa, astronaut):
    with client(fa, api_key="s3cret") as cl:
        assert_error(cl.post("/v1/analyze", content=astronaut), 401, "bad_api_key")
        assert_error(cl.post("/v1/analyze", content=astronaut, headers={"X-API-Key": "s3cre"}), 401)
        assert_error(cl.get("/v1/models", headers={"X-API-Key": "wrong"}), 401)
        ok = cl.post("/v1/analyze", content=astronaut, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["faces"]
        assert cl.get("/v1/models", headers={"X-API-Key": "s3cret"}).json()["settings"]["api_key_required"]
        assert cl.get("/healthz").status_code == 200  # liveness stays open
        with pytest.raises(WebSocketDisconnect) as closed:
            with cl.websocket_connect("/v1/stream?key=wrong") as ws:
                ws.receive_json()
        assert closed.value.code == 1008
        with cl.websocket_connect("/v1/stream?key=s3cret") as ws:
            ws.send_bytes(astronaut)
            assert ws.receive_json()["faces"]


def test_cors_closed_by_default_and_opened_by_setting(fa):
    with client(fa) as cl:
        r = cl.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with client(fa, cors_origins=("http://app.example",)) as cl:
        r = cl.get("/v1/models", headers={"Origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = cl.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_page_is_served_with_every_asset_from_this_server(c):
    r = c.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    html = r.text
    assert "http://" not in html and "https://" not in html
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        body = c.get(asset).text
        assert "http://" not in body and "https://" not in body


def test_micro_batcher_gathers_concurrent_faces_and_hands_each_its_own_rows():
    sizes = []

    def predict(crops, pts):
        sizes.append(len(crops))
        return crops.reshape(len(crops), -1)[:, :1].astype(np.float32)  # each face's id back

    b = MicroBatcher(predict, max_batch=64, wait_ms=100)
    results = {}

    def client_thread(i):
        crops = np.full((2, 1, 4, 4), i, np.uint8)
        results[i] = b.submit(crops, np.zeros((2, 68, 2), np.float32)).result(5)
    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert sum(sizes) == 16 and max(sizes) > 2, sizes  # faces of several requests shared a batch
    for i in range(8):
        assert results[i].ravel().tolist() == [i, i]


def test_concurrent_requests_share_model_batches(fa, astronaut):
    app = create_app(fa, ServeSettings(batch_wait_ms=200, workers=2))
    rs = asyncio.run(concurrent_posts(app, astronaut, 6))
    assert all(r.status_code == 200 for r in rs)
    faces = [r.json()["faces"][0] for r in rs]
    assert {f["label"] for f in faces} == {"happiness"} and {str(f["box"]) for f in faces} == {str(faces[0]["box"])}
    p = np.array([list(f["probs"].values()) for f in faces])
    assert np.abs(p - p[0]).max() < 1e-4  # batched or alone, the same probabilities (float rounding aside)
    with TestClient(app) as cl:
        h = cl.get("/healthz").json()
    assert h["model_faces"] == 6 and h["largest_model_batch"] >= 2, h


def test_stream_tracks_and_smooths(fa, astronaut, two_faces):
    with client(fa, stream_max_fps=1000, smooth_seconds=0.4) as cl:
        with cl.websocket_connect("/v1/stream") as ws:
            replies = []
            for body in (astronaut, astronaut, two_faces):
                ws.send_bytes(body)
                replies.append(ws.receive_json())
            ws.send_text("hello")
            assert ws.receive_json()["error"]["code"] == "not_binary"
            ws.send_bytes(b"garbage")
            assert ws.receive_json()["error"]["code"] == "not_an_image"
    assert [r["frame"] for r in replies] == [0, 1, 2]
    assert replies[0]["faces"][0]["face_id"] == replies[1]["faces"][0]["face_id"] == 1
    assert replies[1]["faces"][0]["label"] == "happiness"
    ids = sorted(f["face_id"] for f in replies[2]["faces"])
    assert len(ids) == 2 and 1 in ids and max(ids) > 1  # the left face kept its id; the new one is new
    assert abs(sum(replies[0]["faces"][0]["smoothed"].values()) - 1) < 1e-3


def test_stream_rate_bound(fa, astronaut):
    with client(fa, stream_max_fps=0.5) as cl:
        with cl.websocket_connect("/v1/stream") as ws:
            ws.send_bytes(astronaut)
            assert ws.receive_json()["faces"]
            ws.send_bytes(astronaut)
            assert ws.receive_json() == {"frame": 1, "skipped": "rate"}


@pytest.mark.parametrize("bad", [{"max_faces": 0}, {"request_timeout_s": 0}, {"batch_wait_ms": -1},
                                 {"api_key": " "}, {"smooth_seconds": -1}, {"workers": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ServeSettings(**bad)


def test_cli_refuses_bad_serve_options(capsys):
    from ferlab.cli import main
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "0"])
    assert e.value.code == 2
    assert main(["serve", "--timeout", "-1"]) == 2
    assert "request_timeout_s" in capsys.readouterr().err
