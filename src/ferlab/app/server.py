"""`ferlab serve`: a REST API, a WebSocket stream for webcams and a web page, on FastAPI + uvicorn.

    POST /v1/analyze         one image (raw body or multipart field `file`) -> face records
    POST /v1/analyze/batch   several images (multipart fields `files`) -> one result per image
    POST /v1/explain?face=i  one image -> PNG: where the model looks on face i (its explain map)
    WS   /v1/stream          JPEG frames in, tracked faces with smoothed labels out (the webcam)
    GET  /v1/models, /healthz, /docs (OpenAPI), /  (the web page, every asset served from here)

One model serves every request: the front end (decode, detection, landmarks, alignment) runs on a
pool of worker threads, each with its own detector; the faces of requests that arrive together go
through the model in one batch (`MicroBatcher`: the first face waits at most `batch_wait_ms` for
others). Every limit is a `ServeSettings` field with a safe default; every refusal is a JSON error
with its status (400, 401, 413, 415, 503 with Retry-After, 504), never a traceback. Clients send
bytes only: no parameter names a file on the server.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import io
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..data.imageio import BadImageError, ImageTooLargeError, NotAnImageError, decode_image
from .video import IoUTracker, Smoother

API_KEY_HEADER = "X-API-Key"


@dataclass
class ServeSettings:
    """The service's limits and knobs (each a `ferlab serve` option)."""
    max_upload_bytes: int = 10 * 2 ** 20   # one image's bytes (413 beyond)
    max_pixels: int = 40_000_000           # decoded pixels of one image (413 beyond)
    max_faces: int = 20                    # faces analysed per image (the most confident ones)
    max_batch_images: int = 16             # images per batch request (413 beyond)
    request_timeout_s: float = 30.0        # one request's time (504 beyond)
    max_in_flight: int = 32                # requests being served at once (503 + Retry-After beyond)
    retry_after_s: int = 1
    batch_wait_ms: float = 5.0             # how long a face waits for others to share its model batch
    max_model_batch: int = 64
    workers: int = 2                       # front-end threads (decode, detect, landmarks, align)
    api_key: str | None = None             # when set, required in the X-API-Key header
    cors_origins: tuple = field(default_factory=tuple)  # closed by default
    stream_max_fps: float = 15.0           # frames per second one webcam stream is served at
    smooth_seconds: float = 0.4            # the stream's per-face smoothing time constant

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_pixels", "max_faces", "max_batch_images", "max_in_flight",
                     "max_model_batch", "workers", "retry_after_s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"serve setting {name} must be at least 1, not {getattr(self, name)}")
        for name in ("request_timeout_s", "stream_max_fps"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"serve setting {name} must be more than 0, not {getattr(self, name)}")
        if not 0 <= float(self.batch_wait_ms) <= 1000:
            raise ValueError(f"serve setting batch_wait_ms must be between 0 and 1000, not {self.batch_wait_ms}")
        if self.api_key is not None and not str(self.api_key).strip():
            raise ValueError("serve setting api_key is empty: give a key or none")
        Smoother([], self.smooth_seconds)  # a bad time constant fails here


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def image_error(e: BadImageError) -> ApiError:
    if isinstance(e, ImageTooLargeError):
        return ApiError(413, "too_many_pixels", str(e))
    if isinstance(e, NotAnImageError):
        return ApiError(415, "not_an_image", str(e))
    return ApiError(400, "bad_image", str(e))


class MicroBatcher:
    """One thread owns the model: faces submitted from any thread are gathered until `max_batch`
    faces or `wait_ms` after the first, classified in one batch, and handed back per submitter."""

    def __init__(self, predict, max_batch: int = 64, wait_ms: float = 5.0):
        self.predict, self.max_batch, self.wait = predict, int(max_batch), float(wait_ms) / 1000
        self.lock = threading.Lock()  # held around every use of the model (also by explain)
        self.q: queue.Queue = queue.Queue()
        self.batches, self.faces, self.largest = 0, 0, 0
        self.thread = threading.Thread(target=self._loop, name="ferlab-model", daemon=True)
        self.thread.start()

    def submit(self, crops: np.ndarray, pts: np.ndarray) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if len(crops) == 0:
            fut.set_result(np.zeros((0, 0), np.float32))
        else:
            self.q.put((crops, pts, fut))
        return fut

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            items, n = [item], len(item[0])
            deadline = time.monotonic() + self.wait
            while n < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    nxt = self.q.get(timeout=left) if left > 0 else self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                items.append(nxt)
                n += len(nxt[0])
            try:
                crops = np.concatenate([c for c, _, _ in items])
                pts = np.concatenate([p for _, p, _ in items])
                with self.lock:
                    probs = self.predict(crops, pts)
                self.batches, self.faces, self.largest = self.batches + 1, self.faces + n, max(self.largest, n)
                i = 0
                for c, _, fut in items:
                    fut.set_result(probs[i:i + len(c)])
                    i += len(c)
            except Exception as e:  # noqa: BLE001 - handed to each waiting request, which answers 500
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)


class FerService:
    """The state behind the app: the analyzer, per-thread copies of it, the batcher, the counters."""

    def __init__(self, analyzer, settings: ServeSettings | None = None):
        self.fa, self.settings = analyzer, settings or ServeSettings()
        self.batcher = MicroBatcher(analyzer.predict_tensor, self.settings.max_model_batch, self.settings.batch_wait_ms)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.settings.workers, thread_name_prefix="ferlab-front")
        self.local = threading.local()
        self.in_flight, self.served, self.refused = 0, 0, 0
        self.started = time.time()

    def worker_analyzer(self):
        if not hasattr(self.local, "fa"):
            self.local.fa = self.fa.worker_copy()
        return self.local.fa

    def front(self, data: bytes, name: str):
        """Decode + faces of one image (on a worker thread) -> (image, crops, points, faces, timings)."""
        t0 = time.perf_counter()
        try:
            rgb = decode_image(data, name, limit=self.settings.max_pixels)
        except BadImageError as e:
            raise image_error(e) from None
        t1 = time.perf_counter()
        crops, pts, faces = self.worker_analyzer().prepare_faces(rgb, self.settings.max_faces)
        t2 = time.perf_counter()
        return rgb, crops, pts, faces, {"decode_ms": 1000 * (t1 - t0), "faces_ms": 1000 * (t2 - t1)}

    async def analyze_bytes(self, data: bytes, name: str, landmarks: bool = False) -> dict:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        rgb, crops, pts, faces, timings = await loop.run_in_executor(self.pool, self.front, data, name)
        t1 = time.perf_counter()
        probs = await asyncio.wrap_future(self.batcher.submit(crops, pts))
        timings["model_ms"] = 1000 * (time.perf_counter() - t1)
        timings["total_ms"] = 1000 * (time.perf_counter() - t0)
        for f, r in zip(faces, self.fa.records(probs)):
            f.update(r)
            if not landmarks:
                f.pop("landmarks", None)
        return {"image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])}, "faces": faces,
                "timings": {k: round(v, 2) for k, v in timings.items()}}

    def explain_png(self, data: bytes, face: int) -> bytes:
        """PNG of face `face`'s aligned crop with the model's first explain map over it."""
        import cv2

        from .explain import explain_batch
        rgb, crops, pts, faces, _ = self.front(data, "upload")
        if not 0 <= face < len(faces):
            raise ApiError(400, "no_such_face", f"face {face}: the image has {len(faces)} face(s) (0 to {len(faces) - 1})")
        with self.batcher.lock:  # Grad-CAM hooks the shared model: nothing else may run it meanwhile
            out = explain_batch(self.fa.model, *self.fa.model_inputs(crops[face:face + 1], pts[face:face + 1]))
        heat = np.asarray(out["panels"][0][1][0], np.float32)
        crop = crops[face].transpose(1, 2, 0)
        crop = np.repeat(crop, 3, 2) if crop.shape[2] == 1 else crop
        size = 192
        crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_CUBIC)
        heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)  # BGR, as imencode wants
        mixed = (0.55 * crop[..., ::-1] + 0.45 * colour).astype(np.uint8)
        return cv2.imencode(".png", mixed)[1].tobytes()

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


# --- request bodies -------------------------------------------------------------------------------

async def read_body(request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body of {int(declared)} bytes is over the limit of {limit}")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(413, "too_large", f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def form_files(request, body: bytes, field_names: tuple, max_files: int) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart body already read (the form parsed from those bytes)."""
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}
    try:
        form = await Request(request.scope, replay).form(max_files=max_files + 1, max_fields=100)
    except Exception as e:  # noqa: BLE001 - python-multipart's errors: a malformed body
        if "too many files" in str(e).lower():
            raise ApiError(413, "too_many_images", f"more than {max_files} images in one request") from None
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({e})") from None
    files = []
    for key, value in form.multi_items():
        if key in field_names and hasattr(value, "read"):
            name = (value.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:200] or "upload"
            files.append((name, await value.read()))
    await form.close()
    if len(files) > max_files:
        raise ApiError(413, "too_many_images", f"{len(files)} images in one request: the limit is {max_files}")
    return files


RAW_TYPES = ("image/", "application/octet-stream")


async def one_image(request, settings: ServeSettings) -> tuple[str, bytes]:
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        body = await read_body(request, settings.max_upload_bytes + 64 * 1024)
        files = await form_files(request, body, ("file", "image"), 1)
        if not files:
            raise ApiError(400, "no_file", "multipart body without a 'file' field")
        name, data = files[0]
    elif not ctype or ctype.startswith(RAW_TYPES):
        name, data = "upload", await read_body(request, settings.max_upload_bytes)
    else:
        raise ApiError(415, "unsupported_type", f"content type {ctype!r}: send image bytes (image/*, "
                                                "application/octet-stream) or multipart/form-data with a 'file'")
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "too_large", f"image of {len(data)} bytes is over the limit of {settings.max_upload_bytes}")
    if not data:
        raise ApiError(400, "empty", "empty body: no image")
    return name, data


# --- the app ---------------------------------------------------------------------------------------

def web_file(name: str) -> bytes:
    return (resources.files("ferlab") / "app" / "web" / name).read_bytes()


WEB_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "style.css": "text/css; charset=utf-8"}
# the page may talk to this server only: no CDN, no external request of any kind
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
       "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def create_app(analyzer, settings: ServeSettings | None = None, model_name: str | None = None):
    """The FastAPI app around one FaceAnalyzer."""
    settings = settings or ServeSettings()
    service = FerService(analyzer, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()
    app = FastAPI(title="ferlab", version="1", description="Facial expression recognition: faces and emotions.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=[API_KEY_HEADER, "Content-Type"])

    def error_response(e: ApiError):
        return JSONResponse({"error": {"code": e.code, "message": e.message}}, e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(v) for v in first.get("loc", ()))
        return error_response(ApiError(400, "bad_parameter", f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def _unexpected(request, e):  # a bug of ours: still JSON, no traceback to the client
        return error_response(ApiError(500, "internal", f"internal error ({type(e).__name__})"))

    def check_key(given: str | None) -> None:
        if settings.api_key is None:
            return
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "bad_api_key", f"missing or wrong API key (the {API_KEY_HEADER} header)",
                           {"WWW-Authenticate": API_KEY_HEADER})

    async def guarded(request, work):
        """Key, in-flight limit and time limit around one request's work."""
        check_key(request.headers.get(API_KEY_HEADER))
        if service.in_flight >= settings.max_in_flight:
            service.refused += 1
            raise ApiError(503, "busy", f"{service.in_flight} requests in flight (the limit): retry shortly",
                           {"Retry-After": str(settings.retry_after_s)})
        service.in_flight += 1
        try:
            return await asyncio.wait_for(work(), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"request took over {settings.request_timeout_s:g} s") from None
        finally:
            service.in_flight -= 1
            service.served += 1

    @app.get("/healthz", tags=["service"])
    async def healthz():
        b = service.batcher
        return {"status": "ok", "in_flight": service.in_flight, "served": service.served, "refused": service.refused,
                "model_batches": b.batches, "model_faces": b.faces, "largest_model_batch": b.largest,
                "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/v1/models", tags=["analysis"])
    async def models(request: Request):
        check_key(request.headers.get(API_KEY_HEADER))
        meta = analyzer.meta
        record = {k: meta[k] for k in ("valid", "test", "epoch", "trained_with", "dtype") if k in meta}
        public = asdict(settings)
        public.pop("api_key")
        public["api_key_required"] = settings.api_key is not None
        return {"models": [{"name": model_name or analyzer.model_path.stem, "arch": meta.get("arch"),
                            "labels": analyzer.labels, "input": analyzer.pre, "detector": analyzer.detector.method,
                            "accuracy": record}], "settings": public}

    @app.post("/v1/analyze", tags=["analysis"],
              openapi_extra={"requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                                         "multipart/form-data": {"schema": {
                                                             "type": "object",
                                                             "properties": {"file": {"type": "string",
                                                                                     "format": "binary"}}}}}}})
    async def analyze(request: Request, landmarks: bool = Query(False, description="include the 68 points")):
        """One image -> its faces: box, detector score, probabilities by label, label (+ landmarks)."""
        async def work():
            name, data = await one_image(request, settings)
            return await service.analyze_bytes(data, name, landmarks)
        return await guarded(request, work)

    @app.post("/v1/analyze/batch", tags=["analysis"])
    async def analyze_batch(request: Request, landmarks: bool = Query(False)):
        """Several images (multipart fields `files`) -> one result per image, in order; a bad image
        gets an `error` of its own and the others are served."""
        async def work():
            if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
                raise ApiError(415, "unsupported_type", "send multipart/form-data with one 'files' field per image")
            limit = settings.max_upload_bytes * settings.max_batch_images + 64 * 1024
            body = await read_body(request, limit)
            files = await form_files(request, body, ("files", "file"), settings.max_batch_images)
            if not files:
                raise ApiError(400, "no_file", "multipart body without 'files' fields")

            async def item(i, name, data):
                try:
                    if not data:
                        raise ApiError(400, "empty", f"{name}: empty file")
                    if len(data) > settings.max_upload_bytes:
                        raise ApiError(413, "too_large", f"{name}: {len(data)} bytes is over the limit of "
                                                         f"{settings.max_upload_bytes}")
                    return {"index": i, "filename": name, **await service.analyze_bytes(data, name, landmarks)}
                except ApiError as e:
                    return {"index": i, "filename": name, "error": {"status": e.status, "code": e.code,
                                                                     "message": e.message}}
            results = await asyncio.gather(*(item(i, n, d) for i, (n, d) in enumerate(files)))
            return {"results": list(results), "ok": sum("error" not in r for r in results),
                    "failed": sum("error" in r for r in results)}
        return await guarded(request, work)

    @app.post("/v1/explain", tags=["analysis"], response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request, face: int = Query(0, ge=0, description="face index, as in /v1/analyze")):
        """Where the model looks on one face of the image: its explain map over the aligned crop (PNG)."""
        async def work():
            _, data = await one_image(request, settings)
            png = await asyncio.get_running_loop().run_in_executor(service.pool, service.explain_png, data, face)
            return Response(png, media_type="image/png")
        return await guarded(request, work)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        """Binary messages of JPEG/PNG frames in; per frame a JSON message with tracked faces
        (face_id, box, smoothed probabilities, hysteresis label). A frame sent sooner than
        1/stream_max_fps after the last one served is answered {"skipped": "rate"}."""
        key = ws.query_params.get("key") or ws.headers.get(API_KEY_HEADER)
        try:
            check_key(key)
        except ApiError:
            await ws.close(code=1008, reason="missing or wrong API key")
            return
        await ws.accept()
        tracker, smoother = IoUTracker(), Smoother(analyzer.labels, settings.smooth_seconds)
        t_start, last, frame = time.monotonic(), -1e9, 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await ws.receive()
                if msg.get("type") == "websocket.disconnect":
                    return
                data = msg.get("bytes")
                if data is None:
                    await ws.send_json({"error": {"code": "not_binary", "message": "send frames as binary messages"}})
                    continue
                now = time.monotonic()
                if now - last < 1.0 / settings.stream_max_fps:
                    await ws.send_json({"frame": frame, "skipped": "rate"})
                    continue
                last = now
                if len(data) > settings.max_upload_bytes:
                    await ws.send_json({"frame": frame, "error": {"code": "too_large", "message": "frame too large"}})
                    continue
                try:
                    t0 = time.perf_counter()
                    _, crops, pts, faces, timings = await loop.run_in_executor(service.pool, service.front, data, "frame")
                    probs = await asyncio.wrap_future(service.batcher.submit(crops, pts))
                except ApiError as e:
                    await ws.send_json({"frame": frame, "error": {"code": e.code, "message": e.message}})
                    continue
                t = now - t_start
                ids = tracker.update([f["box"] for f in faces], frame)
                out = []
                for fid, f, p in zip(ids, faces, probs):
                    sm, label = smoother.update(fid, t, p)
                    out.append({"face_id": fid, "box": f["box"], "score": f["score"],
                                "smoothed": {n: round(float(v), 4) for n, v in zip(analyzer.labels, sm)},
                                "label": analyzer.labels[label], "confidence": round(float(sm[label]), 4)})
                smoother.forget([tr.face_id for tr in tracker.tracks])
                await ws.send_json({"frame": frame, "time": round(t, 3), "faces": out,
                                    "server_ms": round(1000 * (time.perf_counter() - t0), 1)})
                frame += 1
        except WebSocketDisconnect:
            return

    @app.get("/", include_in_schema=False)
    async def page():
        return Response(web_file("index.html"), media_type=WEB_FILES["index.html"], headers={"Content-Security-Policy": CSP})

    @app.get("/docs", include_in_schema=False)
    async def api_docs():
        """Swagger UI for the API, its script and style served by this server (works offline)."""
        from fastapi.openapi.docs import get_swagger_ui_html
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="ferlab API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/docs-assets/{name}", include_in_schema=False)
    async def api_docs_asset(name: str):
        path = swagger_ui_files().get(name)  # a fixed list: no path from the client reaches the file system
        if path is None:
            raise ApiError(404, "not_found", "no such file")
        return Response(path.read_bytes(), media_type=SWAGGER_TYPES[path.suffix],
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in WEB_FILES:  # a fixed list: no path from the client reaches the file system
            raise ApiError(404, "not_found", "no such file")
        return Response(web_file(name), media_type=WEB_FILES[name], headers={"Cache-Control": "no-cache"})

    return app


SWAGGER_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def swagger_ui_files() -> dict:
    """Swagger UI's script, style and icon from the swagger-ui-bundle wheel (Apache-2.0), by name."""
    import importlib.util
    spec = importlib.util.find_spec("swagger_ui_bundle")
    if spec is None or not spec.submodule_search_locations:
        return {}
    vendor = Path(list(spec.submodule_search_locations)[0]) / "vendor"
    folders = sorted(vendor.glob("swagger-ui-*"))
    if not folders:
        return {}
    names = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
    return {n: folders[-1] / n for n in names if (folders[-1] / n).is_file()}


def serve(analyzer, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, model_name=None,
          log_level: str = "info") -> None:
    import uvicorn
    uvicorn.run(create_app(analyzer, settings, model_name), host=host, port=port, log_level=log_level)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB array as PNG bytes (for clients and tests)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()
