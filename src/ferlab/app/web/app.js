// ferlab's web page: a photo through POST /v1/analyze, the webcam through the /v1/stream WebSocket.
// Plain JS, no build step, no request to any other host.
"use strict";
const $ = (id) => document.getElementById(id);
let labels = [], maxFps = 15, lastFile = null;

function apiKey() { return $("api-key").value || localStorage.getItem("ferlab-key") || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  const k = apiKey();
  if (k) { h["X-API-Key"] = k; localStorage.setItem("ferlab-key", k); }
  return h;
}
async function errorText(resp) {
  try { const j = await resp.json(); return `${resp.status}: ${j.error ? j.error.message : JSON.stringify(j)}`; }
  catch (e) { return `${resp.status}`; }
}

async function loadModel() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) { $("key-row").hidden = false; $("model-info").textContent = "This server needs an API key."; return; }
  if (!r.ok) { $("model-info").textContent = await errorText(r); return; }
  const j = await r.json();
  const m = j.models[0];
  labels = m.labels; maxFps = j.settings.stream_max_fps;
  $("key-row").hidden = !j.settings.api_key_required;
  $("model-info").textContent = `Model: ${m.name} (${m.arch}, ${m.labels.length} emotions, detector ${m.detector}).`;
}

function placeBox(el, box, sx, sy) {
  el.style.left = `${box[0] * sx}px`; el.style.top = `${box[1] * sy}px`;
  el.style.width = `${(box[2] - box[0]) * sx}px`; el.style.height = `${(box[3] - box[1]) * sy}px`;
}

function faceCard(face, i) {
  const card = document.createElement("div");
  card.className = "face-card"; card.dataset.face = i;
  const h = document.createElement("h4");
  h.textContent = `Face ${i + 1}: ${face.label} ${(100 * face.confidence).toFixed(0)}%`;
  card.appendChild(h);
  const names = Object.keys(face.probs).sort((a, b) => face.probs[b] - face.probs[a]);
  for (const n of names) {
    const row = document.createElement("div"); row.className = "bar-row";
    const name = document.createElement("span"); name.textContent = n;
    const bar = document.createElement("div"); bar.className = "bar";
    const fill = document.createElement("span"); fill.style.width = `${100 * face.probs[n]}%`; bar.appendChild(fill);
    const v = document.createElement("span"); v.textContent = `${(100 * face.probs[n]).toFixed(1)}%`;
    row.append(name, bar, v); card.appendChild(row);
  }
  card.addEventListener("click", () => explainFace(i));
  return card;
}

async function analyzePhoto(file) {
  lastFile = file;
  $("photo-status").textContent = "Analysing…";
  $("boxes").replaceChildren(); $("faces").replaceChildren(); $("explain").hidden = true;
  const img = $("photo-img");
  img.src = URL.createObjectURL(file);
  await img.decode().catch(() => {});
  const r = await fetch("/v1/analyze", { method: "POST", body: file,
                                          headers: headers({ "Content-Type": file.type || "application/octet-stream" }) });
  if (!r.ok) { $("photo-status").textContent = `Refused: ${await errorText(r)}`; return; }
  const res = await r.json();
  const sx = img.clientWidth / res.image.width, sy = img.clientHeight / res.image.height;
  res.faces.forEach((f, i) => {
    const b = document.createElement("div"); b.className = "face-box"; b.dataset.face = i;
    placeBox(b, f.box, sx, sy);
    const l = document.createElement("span"); l.className = "face-label";
    l.textContent = `${f.label} ${(100 * f.confidence).toFixed(0)}%`;
    b.appendChild(l); b.addEventListener("click", () => explainFace(i));
    $("boxes").appendChild(b); $("faces").appendChild(faceCard(f, i));
  });
  $("photo-status").textContent = `${res.faces.length} face(s), ${res.timings.total_ms.toFixed(0)} ms on the server.`
    + (res.faces.length ? " Click a face to see where the model looks." : "");
}

async function explainFace(i) {
  if (!lastFile) return;
  document.querySelectorAll(".face-box").forEach((b) => b.classList.toggle("selected", Number(b.dataset.face) === i));
  const r = await fetch(`/v1/explain?face=${i}`, { method: "POST", body: lastFile,
                                                    headers: headers({ "Content-Type": lastFile.type || "application/octet-stream" }) });
  if (!r.ok) { $("photo-status").textContent = `Explain refused: ${await errorText(r)}`; return; }
  $("explain-img").src = URL.createObjectURL(await r.blob());
  $("explain-title").textContent = `face ${i + 1}`;
  $("explain").hidden = false;
}

// --- webcam ---------------------------------------------------------------------------------------
let cam = null;
async function startCam() {
  $("cam-status").textContent = "Asking for the camera…";
  let media;
  try { media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false }); }
  catch (e) { $("cam-status").textContent = `No camera: ${e.message}`; return; }
  const video = $("cam-video");
  video.srcObject = media; await video.play();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey();
  const ws = new WebSocket(`${proto}://${location.host}/v1/stream${key ? "?key=" + encodeURIComponent(key) : ""}`);
  ws.binaryType = "arraybuffer";
  const canvas = document.createElement("canvas");
  cam = { media, ws, canvas, stop: false, times: [] };
  $("cam-start").disabled = true; $("cam-stop").disabled = false;
  ws.onopen = () => { $("cam-status").textContent = "Live."; sendFrame(); };
  ws.onclose = (ev) => { if (cam && !cam.stop) $("cam-status").textContent = `Stream closed (${ev.code} ${ev.reason}).`; };
  ws.onmessage = (ev) => { const msg = JSON.parse(ev.data); if (!msg.skipped) showLive(msg); schedule(); };
}

function schedule() {  // one frame in flight at a time, at most maxFps per second
  if (!cam || cam.stop) return;
  const wait = Math.max(0, 1000 / maxFps - (performance.now() - cam.sent));
  setTimeout(sendFrame, wait);
}

function sendFrame() {
  if (!cam || cam.stop || cam.ws.readyState !== WebSocket.OPEN) return;
  const video = $("cam-video"), c = cam.canvas;
  if (!video.videoWidth) { setTimeout(sendFrame, 50); return; }
  c.width = video.videoWidth; c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  cam.sent = performance.now();
  c.toBlob((blob) => { if (blob && cam && !cam.stop) blob.arrayBuffer().then((b) => cam.ws.send(b)); }, "image/jpeg", 0.85);
}

function showLive(msg) {
  const video = $("cam-video");
  const now = performance.now();
  cam.times.push(now); cam.times = cam.times.filter((t) => now - t < 2000);
  $("fps").textContent = cam.times.length > 1 ? ((cam.times.length - 1) / ((now - cam.times[0]) / 1000)).toFixed(1) : "–";
  if (msg.error) { $("cam-status").textContent = `Frame refused: ${msg.error.message}`; return; }
  const sx = video.clientWidth / video.videoWidth, sy = video.clientHeight / video.videoHeight;
  const boxes = $("live-boxes"), list = $("live-faces");
  boxes.replaceChildren(); list.replaceChildren();
  for (const f of msg.faces) {
    const b = document.createElement("div"); b.className = "live-box"; placeBox(b, f.box, sx, sy);
    const l = document.createElement("span"); l.className = "live-label";
    l.textContent = `#${f.face_id} ${f.label} ${(100 * f.confidence).toFixed(0)}%`;
    b.appendChild(l); boxes.appendChild(b);
    const li = document.createElement("li"); li.className = "live-face"; li.dataset.faceId = f.face_id;
    li.textContent = `face #${f.face_id}: ${f.label} (${(100 * f.confidence).toFixed(0)}%, smoothed)`;
    list.appendChild(li);
  }
}

function stopCam() {
  if (!cam) return;
  cam.stop = true; cam.ws.close(); cam.media.getTracks().forEach((t) => t.stop());
  cam = null; $("cam-start").disabled = false; $("cam-stop").disabled = true; $("cam-status").textContent = "Stopped.";
}

window.addEventListener("DOMContentLoaded", () => {
  loadModel();
  $("api-key").addEventListener("change", loadModel);
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) analyzePhoto(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over");
                                          if (e.dataTransfer.files[0]) analyzePhoto(e.dataTransfer.files[0]); });
  $("cam-start").addEventListener("click", startCam);
  $("cam-stop").addEventListener("click", stopCam);
});
