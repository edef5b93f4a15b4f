// DAA age estimation page: pick, drop or paste a photo; POST it to /estimate; draw each face's box and age;
// chart the selected face's per-reference estimates y - delta_y. A video clip goes to /estimate/video and plays
// with each tracked face boxed and labelled with its fused age. Plain ES2020, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORE = "daa-api-key";
const MAX_AUTO_RETRY_S = 10;

const ui = {
  file: $("file"), drop: $("dropzone"), interval: $("interval"), status: $("status"), error: $("error"),
  keyForm: $("key-form"), key: $("api-key"), result: $("result"), photo: $("photo"), boxes: $("boxes"),
  faces: $("faces"), facesEmpty: $("faces-empty"), chartPanel: $("chart-panel"), chartTitle: $("chart-title"),
  chart: $("chart"), values: $("values"), meta: $("meta"), clip: $("clip"), tracksHelp: $("tracks-help"),
};
const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi)$/i;
const isVideo = (file) => (file.type || "").startsWith("video/") || VIDEO_NAME.test(file.name || "");

let current = null;   // {file, url}: the photo on screen
let data = null;      // the last successful response
let selected = -1;
let seq = 0;          // request counter: answers to superseded requests are ignored
let controller = null;
let chartWidth = 0;   // the chart is redrawn when its container's width changes

const fmt = (x, d = 1) => Number(x).toFixed(d);
const ageText = (f) => `${fmt(f.age)} (${fmt(f.age_range.low)}–${fmt(f.age_range.high)})`;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text) { ui.status.textContent = text; }

function showError(text, extra) {
  ui.result.hidden = true;  // never leave an earlier photo's result next to this error
  ui.error.replaceChildren(el("p", {}, text));
  if (extra) ui.error.append(el("p", { class: "detail" }, extra));
  ui.error.hidden = false;
  setStatus("");
}

function clearError() { ui.error.hidden = true; ui.error.replaceChildren(); }

let keyInMemory = "";  // used only where sessionStorage is unavailable (then the key lasts until a reload)

function getKey() {
  try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return keyInMemory; }
}

function setKey(value) {
  keyInMemory = value;
  try {
    if (value) sessionStorage.setItem(KEY_STORE, value); else sessionStorage.removeItem(KEY_STORE);
  } catch { /* storage disabled: keyInMemory holds it */ }
}

// ---- input: file picker, drag and drop, paste --------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  if (current) URL.revokeObjectURL(current.url);
  current = { file, url: URL.createObjectURL(file), video: isVideo(file) };
  ui.result.hidden = true;  // the previous photo's result goes; the new one's comes with its answer
  estimate();
}

ui.file.addEventListener("change", () => { useFile(ui.file.files[0]); ui.file.value = ""; });
ui.interval.addEventListener("change", () => { if (current) estimate(); });

for (const type of ["dragenter", "dragover"]) {
  ui.drop.addEventListener(type, (e) => { e.preventDefault(); ui.drop.classList.add("over"); });
}
for (const type of ["dragleave", "dragend"]) {
  ui.drop.addEventListener(type, () => ui.drop.classList.remove("over"));
}
ui.drop.addEventListener("drop", (e) => {
  e.preventDefault();
  ui.drop.classList.remove("over");
  const files = e.dataTransfer && e.dataTransfer.files;
  if (files && files.length) useFile(files[0]);
});
// A photo dropped next to the zone must not make the browser navigate away from the page.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

document.addEventListener("paste", (e) => {
  const items = (e.clipboardData && e.clipboardData.items) || [];
  for (const item of items) {
    if (item.kind === "file" && item.type.startsWith("image/")) {
      const blob = item.getAsFile();
      if (!blob) continue;
      e.preventDefault();
      const ext = item.type.split("/")[1] || "png";
      useFile(new File([blob], `pasted.${ext}`, { type: item.type }));
      return;
    }
  }
});

ui.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = ui.key.value.trim();
  if (!key) return;
  setKey(key);
  ui.key.value = "";
  ui.keyForm.hidden = true;
  if (current) estimate(); else setStatus("API key saved for this tab.");
});

// ---- the request -------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function estimate(retried = false) {
  const mine = ++seq;
  if (controller) controller.abort();
  controller = new AbortController();
  clearError();
  setStatus(retried ? "Trying again…" : current.video ? "Tracking faces in the clip…" : "Estimating ages…");
  document.body.setAttribute("aria-busy", "true");
  const form = new FormData();
  form.append("file", current.file, current.file.name || (current.video ? "clip" : "photo"));
  const params = current.video ? new URLSearchParams({ include_frames: "true" })
    : new URLSearchParams({ reference_interval: ui.interval.value, include_deltas: "true" });
  const path = current.video ? "/estimate/video" : "/estimate";
  const headers = {};
  const key = getKey();
  if (key) headers["X-API-Key"] = key;
  let res;
  let body = null;
  try {
    res = await fetch(`${path}?${params}`, { method: "POST", body: form, headers, signal: controller.signal });
    try { body = await res.json(); } catch { body = null; }
  } catch (err) {
    if (mine !== seq) return;
    document.body.removeAttribute("aria-busy");
    showError("Could not reach the age estimation service. Check your connection and that the service is running, " +
      "then try again.", err && err.name === "TypeError" ? "" : String(err));
    return;
  }
  if (mine !== seq) return;
  if (res.status === 503 && !retried) {
    const wait = retryAfter(res);
    if (wait <= MAX_AUTO_RETRY_S) {
      setStatus(`The service is busy. Trying again in ${wait} s…`);
      await sleep(wait * 1000);
      if (mine === seq) estimate(true);
      return;
    }
  }
  document.body.removeAttribute("aria-busy");
  if (res.ok && body && Array.isArray(body.faces)) {
    show(body);
  } else if (res.ok && body && Array.isArray(body.tracks)) {
    showClip(body);
  } else {
    explain(res, body, key);
  }
}

function retryAfter(res) {
  const v = Number.parseInt(res.headers.get("Retry-After") || "", 10);
  return Number.isFinite(v) && v >= 0 ? v : 1;
}

// Every API error body is {code, message, detail}; say what it means for the person using the page.
function explain(res, body, sentKey) {
  const code = (body && body.code) || "";
  const server = body && body.message ? `The service said: ${body.message}${code ? ` (${code})` : ""}.` : "";
  const size = (n) => (n < 1024 * 1024 ? `${Math.max(1, Math.round(n / 1024))} KB`
    : `${fmt(n / (1024 * 1024), n >= 10 * 1024 * 1024 ? 0 : 1)} MB`);
  let text;
  switch (res.status) {
    case 400:
      text = code === "empty_file" ? "That file is empty. Choose a photo."
        : "That file looks damaged or incomplete, so it cannot be read as a photo. Try another file.";
      break;
    case 401:
    case 403:
      if (sentKey) {
        setKey("");
        text = "The API key was not accepted, so it has been forgotten. Enter a valid key to continue.";
      } else {
        text = "This service needs an API key. Enter it below to continue.";
      }
      ui.keyForm.hidden = false;
      showError(text, server);
      ui.key.focus();
      return;
    case 413: {
      const max = body && body.detail && body.detail.max_bytes;
      text = code === "video_too_long" ? "The clip is too long for this service. Trim it and try again."
        : code === "video_too_large" ? "The clip has too many or too large frames for this service. Use a shorter " +
          "or smaller clip."
        : code === "image_too_large"
        ? "The picture has too many pixels for this service. Use a smaller image (fewer megapixels)."
        : `The file is too large${max ? ` (the limit is ${size(max)})` : ""}. Use a smaller photo.`;
      break;
    }
    case 408:
      text = "The photo took too long to arrive. Check your connection and try again.";
      break;
    case 415:
      text = code === "unsupported_video_type"
        ? "That file is not a video clip this service can read. Choose an MP4, WebM, MOV or MKV clip (a photo " +
          "goes in as a photo)."
        : "That file is not a photo this service can read. Choose a JPEG, PNG, WebP, BMP, GIF or TIFF image.";
      break;
    case 422: {
      const first = body && Array.isArray(body.detail) && body.detail[0];
      const what = first ? ` (${(first.loc || []).slice(-1)[0] || "option"}: ${first.msg})` : "";
      text = `One of the options was not accepted${what}. Reload the page and try again.`;
      break;
    }
    case 500:
      text = "The model failed on this photo. Try again, or try another photo.";
      break;
    case 503: {
      const wait = retryAfter(res);
      text = code === "not_ready"
        ? `The model is still loading. Try again in ${wait} second${wait === 1 ? "" : "s"}.`
        : `The service is busy right now. Try again in ${wait} second${wait === 1 ? "" : "s"}.`;
      break;
    }
    default:
      text = `Something went wrong (HTTP ${res.status}). Try again later.`;
  }
  showError(text, server);
}

// ---- the result --------------------------------------------------------------------------------------------

function show(body) {
  data = body;
  showStill();
  ui.keyForm.hidden = true;
  selected = -1;
  ui.result.hidden = false;
  ui.photo.src = current.url;
  ui.photo.alt = `The photo you chose, ${body.image.width} × ${body.image.height} pixels`;
  ui.boxes.replaceChildren();
  ui.faces.replaceChildren();
  const n = body.faces.length;
  ui.facesEmpty.hidden = n > 0;
  ui.chartPanel.hidden = true;
  body.faces.forEach((f, i) => {
    const name = `Face ${i + 1}: age ${fmt(f.age)}, range ${fmt(f.age_range.low)} to ${fmt(f.age_range.high)}`;
    const box = el("button", { type: "button", class: "box", "aria-label": name, "aria-pressed": "false",
      "data-face": String(i) });
    const { width: W, height: H } = body.image;
    box.style.left = `${(100 * f.box.x1) / W}%`;
    box.style.top = `${(100 * f.box.y1) / H}%`;
    box.style.width = `${(100 * (f.box.x2 - f.box.x1)) / W}%`;
    box.style.height = `${(100 * (f.box.y2 - f.box.y1)) / H}%`;
    const label = el("span", { class: "label" }, fmt(f.age));
    label.append(el("span", { class: "range" }, ` (${fmt(f.age_range.low)}–${fmt(f.age_range.high)})`));
    if (f.box.y1 / H < 0.08) label.classList.add("inside");
    if (f.box.x1 + f.box.x2 > W) label.classList.add("right");  // right half: keep the label over the photo
    box.append(label);
    box.addEventListener("click", () => select(i));
    ui.boxes.append(box);

    const item = el("li");
    const btn = el("button", { type: "button", class: "face", "aria-pressed": "false", "data-face": String(i) });
    btn.append(el("span", { class: "face-n" }, `Face ${i + 1}`), el("span", { class: "face-age" }, `${fmt(f.age)} years`),
      el("span", { class: "face-range" }, `range ${fmt(f.age_range.low)}–${fmt(f.age_range.high)}`));
    btn.addEventListener("click", () => select(i));
    item.append(btn);
    ui.faces.append(item);
  });
  renderMeta(body);
  setStatus(n === 0 ? "No face found in this photo." : n === 1 ? `Found 1 face: age ${ageText(body.faces[0])}.`
    : `Found ${n} faces. Select one to see its per-reference estimates.`);
  if (n > 0) select(0, false);
}

// ---- a clip: play it, with each tracked face's box where it is now and its fused age -----------------------

function showStill() {
  ui.clip.pause();
  ui.clip.hidden = true;
  ui.clip.removeAttribute("src");
  ui.photo.hidden = false;
  ui.tracksHelp.hidden = true;
  ui.boxes.classList.remove("playing");
}

function showClip(body) {
  data = body;
  ui.keyForm.hidden = true;
  selected = -1;
  ui.result.hidden = false;
  ui.photo.hidden = true;
  ui.photo.removeAttribute("src");
  ui.clip.hidden = false;
  ui.clip.src = current.url;
  ui.boxes.classList.add("playing");
  ui.boxes.replaceChildren();
  ui.faces.replaceChildren();
  ui.chartPanel.hidden = true;
  const n = body.tracks.length;
  ui.facesEmpty.hidden = n > 0;
  ui.facesEmpty.textContent = n > 0 ? "" : "No face found in the sampled frames of this clip.";
  ui.tracksHelp.hidden = n === 0;
  for (const t of body.tracks) {
    const item = el("li");
    const row = el("div", { class: "face", "data-track": String(t.id) });
    row.append(el("span", { class: "face-n" }, `Person ${t.id}`), el("span", { class: "face-age" }, `${fmt(t.age)} years`),
      el("span", { class: "face-range" }, `range ${fmt(t.age_range.low)}–${fmt(t.age_range.high)}, ` +
        `${fmt(t.start_s)}–${fmt(t.end_s)} s, ${t.frames} frames`));
    item.append(row);
    ui.faces.append(item);
  }
  const v = body.video, tm = body.timing;
  const rows = [
    ["Model", `${body.model.name}, version ${body.model.version}`],
    ["Clip", `${v.width} × ${v.height} px, ${v.codec}${v.duration_s ? `, ${fmt(v.duration_s)} s` : ""}; ` +
      `${v.frames_sampled} of ${v.frames_decoded} frames searched (${fmt(body.fps)} per second)`],
    ["Time", `${fmt(tm.total_ms)} ms in total: decode ${fmt(tm.decode_ms)}, detect ${fmt(tm.detect_ms)}, ` +
      `estimate ${fmt(tm.estimate_ms)} ms`],
  ];
  ui.meta.replaceChildren(...rows.flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, val)]));
  setStatus(n === 0 ? "No face found in this clip." : n === 1
    ? `Found 1 person: age ${ageText(body.tracks[0])}.` : `Found ${n} people in the clip.`);
  drawClipBoxes();
  ui.clip.play().catch(() => { /* autoplay refused: the controls start it */ });
}

// The boxes of the sampled frame nearest to the playing time, within one sampling step.
function drawClipBoxes() {
  if (!data || !Array.isArray(data.tracks) || ui.clip.hidden) return;
  const now = ui.clip.currentTime || 0;
  const step = 1 / (data.fps || 5);
  const { width: W, height: H } = data.video;
  const boxes = [];
  for (const t of data.tracks) {
    let best = null;
    for (const f of t.frame_estimates || []) {
      if (Math.abs(f.t - now) <= step && (!best || Math.abs(f.t - now) < Math.abs(best.t - now))) best = f;
    }
    if (!best) continue;
    const box = el("div", { class: "box", "data-track": String(t.id), role: "img",
      "aria-label": `Person ${t.id}: age ${fmt(t.age)}` });
    box.style.left = `${(100 * best.box.x1) / W}%`;
    box.style.top = `${(100 * best.box.y1) / H}%`;
    box.style.width = `${(100 * (best.box.x2 - best.box.x1)) / W}%`;
    box.style.height = `${(100 * (best.box.y2 - best.box.y1)) / H}%`;
    const label = el("span", { class: "label" }, `${t.id}: ${fmt(t.age)}`);
    if (best.box.y1 / H < 0.08) label.classList.add("inside");
    box.append(label);
    boxes.push(box);
  }
  ui.boxes.replaceChildren(...boxes);
}
ui.clip.addEventListener("timeupdate", drawClipBoxes);
ui.clip.addEventListener("seeked", drawClipBoxes);
ui.clip.addEventListener("loadeddata", drawClipBoxes);
(function follow() {  // smoother than timeupdate's ~4 per second while it plays
  if (!ui.clip.hidden && !ui.clip.paused) drawClipBoxes();
  requestAnimationFrame(follow);
})();

// Labels that would overlap show the age only (the selected face keeps its range, on top).
function fitLabels() {
  ui.boxes.classList.remove("compact");
  const r = [...ui.boxes.querySelectorAll(".label")].map((l) => l.getBoundingClientRect());
  const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  ui.boxes.classList.toggle("compact", r.some((a, i) => r.slice(i + 1).some((b) => hit(a, b))));
}
ui.photo.addEventListener("load", fitLabels);

function renderMeta(body) {
  const t = body.timing;
  const rows = [
    ["Model", `${body.model.name}, version ${body.model.version}`],
    ["Image", `${body.image.width} × ${body.image.height} px${body.image.format ? `, ${body.image.format}` : ""}`],
    ["References", `${body.reference_ages.length} reference ages`],
    ["Time", `${fmt(t.total_ms)} ms in total: decode ${fmt(t.decode_ms)}, detect ${fmt(t.detect_ms)}, ` +
      `estimate ${fmt(t.estimate_ms)} ms`],
  ];
  ui.meta.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function select(i, announce = true) {
  selected = i;
  for (const b of document.querySelectorAll("[data-face]")) {
    const on = b.getAttribute("data-face") === String(i);
    b.setAttribute("aria-pressed", String(on));
    b.classList.toggle("selected", on);
  }
  const f = data.faces[i];
  ui.chartPanel.hidden = false;
  ui.chartTitle.textContent = `Face ${i + 1}: per-reference estimates`;
  drawChart(f, data.reference_ages, i);
  if (announce) setStatus(`Face ${i + 1} selected: age ${fmt(f.age)}, range ${fmt(f.age_range.low)} to ${fmt(f.age_range.high)}.`);
}

let resizePending = false;
window.addEventListener("resize", () => {
  if (resizePending || selected < 0 || ui.chartPanel.hidden) return;
  resizePending = true;
  requestAnimationFrame(() => {
    resizePending = false;
    fitLabels();
    if (Math.abs(ui.chart.clientWidth - chartWidth) > 8) drawChart(data.faces[selected], data.reference_ages, selected);
  });
});

// ---- the chart: y - delta_y against the reference age y ------------------------------------------------

function niceStep(span, target) {
  const raw = span / target;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function ticks(lo, hi, target) {
  const step = niceStep(hi - lo || 1, target);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v * 100) / 100);
  return out;
}

function drawChart(face, refs, index) {
  ui.chart.replaceChildren();
  ui.values.replaceChildren();
  const deltas = face.delta_ages;
  if (!Array.isArray(deltas) || deltas.length !== refs.length) {
    ui.chart.append(el("p", { class: "empty" }, "The service did not return per-reference values for this face."));
    return;
  }
  const est = refs.map((y, k) => y - deltas[k]);
  // drawn at the container's own width, so the text keeps its size on a phone
  const W = Math.round(Math.min(720, Math.max(280, ui.chart.clientWidth || 560)));
  const H = Math.round(Math.min(300, Math.max(220, W * 0.56)));
  const m = { l: 50, r: 12, t: 12, b: 44 };
  const xMax = Math.max(100, ...refs), xMin = Math.min(0, ...refs);
  const all = [...est, face.age, face.age_range.low, face.age_range.high];
  const lo = Math.min(...est), hi = Math.max(...est);
  const pad = Math.max(1, (Math.max(...all) - Math.min(...all)) * 0.08);
  const yMin = Math.min(...all) - pad, yMax = Math.max(...all) + pad;
  const yt = ticks(yMin, yMax, H < 260 ? 4 : 5);
  const X = (v) => m.l + ((v - xMin) / (xMax - xMin)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - yMin) / (yMax - yMin)) * (H - m.t - m.b);
  chartWidth = W;

  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-svg-title chart-svg-desc",
    class: "chart", preserveAspectRatio: "xMidYMid meet" });
  root.append(
    svg("title", { id: "chart-svg-title" }, `Face ${index + 1}: estimate for each reference age`),
    svg("desc", { id: "chart-svg-desc" }, `${refs.length} per-reference estimates y minus delta y, from ${fmt(lo)} to ` +
      `${fmt(hi)} years; their mean, the age, is ${fmt(face.age)}; age range ${fmt(face.age_range.low)} to ` +
      `${fmt(face.age_range.high)}.`),
  );
  // age range band, grid, axes
  root.append(svg("rect", { class: "band", x: m.l, width: W - m.l - m.r, y: Y(face.age_range.high),
    height: Math.max(1, Y(face.age_range.low) - Y(face.age_range.high)) }));
  const grid = svg("g", { class: "grid" });
  for (const v of yt) {
    grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }));
    grid.append(svg("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  for (const v of ticks(xMin, xMax, W < 420 ? 5 : 10)) {
    grid.append(svg("line", { class: "xtick", x1: X(v), x2: X(v), y1: H - m.b, y2: H - m.b + 5 }));
    grid.append(svg("text", { x: X(v), y: H - m.b + 18, "text-anchor": "middle" }, String(v)));
  }
  root.append(grid);
  root.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  root.append(svg("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  root.append(svg("text", { class: "axis-label", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle" },
    "reference age y (years)"));
  root.append(svg("text", { class: "axis-label", x: -(m.t + H - m.b) / 2, y: 14, "text-anchor": "middle",
    transform: "rotate(-90)" }, "estimate y − Δy (years)"));
  // the per-reference points, and the age (Eq. 9) over them
  const pts = svg("g", { class: "points" });
  const r = refs.length > 40 ? 2.6 : 4;
  refs.forEach((y, k) => {
    const c = svg("circle", { class: "pt", cx: X(y).toFixed(1), cy: Y(est[k]).toFixed(1), r });
    c.append(svg("title", {}, `y = ${y}: Δy = ${fmt(deltas[k], 2)}, y − Δy = ${fmt(est[k], 2)}`));
    pts.append(c);
  });
  root.append(pts);
  root.append(svg("line", { class: "mean", x1: m.l, x2: W - m.r, y1: Y(face.age), y2: Y(face.age) }));
  root.append(svg("text", { class: "mean-label", x: W - m.r - 4, y: Y(face.age) - 6, "text-anchor": "end" },
    `age ${fmt(face.age)}`));
  ui.chart.append(root);

  const head = el("tr");
  for (const h of ["reference y", "Δy", "y − Δy"]) head.append(el("th", { scope: "col" }, h));
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  refs.forEach((y, k) => {
    const tr = el("tr");
    tr.append(el("td", {}, String(y)), el("td", {}, fmt(deltas[k], 2)), el("td", {}, fmt(est[k], 2)));
    tbody.append(tr);
  });
  ui.values.append(thead, tbody);
}
