// llflow demo page: upload -> job -> poll -> show. No libraries, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,        // /api/info
  upload: null,      // the current input (server upload record)
  job: null,         // id of the job whose result the page is waiting for / showing
  result: null,      // last finished job's status
  pollTimer: null,
  submitTimer: null,
  mode: "slider",
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text, stateName, progress) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = stateName;
  const bar = $("progress");
  if (progress === null || progress === undefined) {
    bar.hidden = true;
  } else {
    bar.hidden = false;
    if (progress < 0) bar.removeAttribute("value"); else bar.value = progress;
  }
  const busy = stateName === "queued" || stateName === "running" || stateName === "uploading";
  $("compare").classList.toggle("busy", busy);
  $("side").classList.toggle("busy", busy);
}

function formatEV(value) {
  const v = Number(value);
  if (v === 0) return "±0 EV";
  return (v > 0 ? "+" : "−") + Math.abs(v).toFixed(2).replace(/\.?0+$/, "") + " EV";
}

function megabytes(bytes) {
  return (bytes / (1024 * 1024)).toFixed(1);
}

async function readJSON(response) {
  try {
    return await response.json();
  } catch (err) {
    return { error: `the server answered ${response.status} ${response.statusText}` };
  }
}

function params() {
  return {
    exposure: Number($("exposure").value),
    temperature: Number($("temperature").value),
    samples: Number($("samples").value),
  };
}

// ---------------------------------------------------------------------------------------------
// Start-up

async function init() {
  bindControls();
  try {
    const response = await fetch("/api/info");
    const info = await readJSON(response);
    if (!response.ok) throw new Error(info.error || "cannot load /api/info");
    state.info = info;
    const params = (info.parameters / 1e6).toFixed(1);
    const threads = info.threads ? `, ${info.threads} thread${info.threads === 1 ? "" : "s"}` : "";
    $("model-line").textContent =
      `Model ${info.architecture} (${params} M parameters) on ${info.device}${threads}, ${info.precision}, ${info.engine} engine · ` +
      `uploads up to ${info.max_upload_bytes / (1024 * 1024)} MB and ${info.max_megapixels} MP · ${info.model}`;
    $("formats").textContent = `${info.formats.map((f) => f.toUpperCase()).join(", ")} · up to ` +
      `${info.max_upload_bytes / (1024 * 1024)} MB`;
    $("exposure").min = info.exposure_range[0];
    $("exposure").max = info.exposure_range[1];
    $("temperature").max = Math.min(info.temperature_max, 1.5);
    $("samples").max = info.max_samples;
    const examples = $("examples");
    for (const ex of info.examples) {
      const button = document.createElement("button");
      button.type = "button";
      button.title = `${ex.name} (${ex.width}×${ex.height})`;
      button.dataset.example = ex.name;
      const img = document.createElement("img");
      img.src = ex.thumb;
      img.alt = ex.name;
      button.appendChild(img);
      button.addEventListener("click", () => useExample(ex.name));
      examples.appendChild(button);
    }
  } catch (err) {
    showError(`Cannot reach the demo server (${err.message}); is llflow demo still running?`);
  }
  document.body.dataset.ready = "1";
}

function bindControls() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files && event.target.files[0];
    if (file) uploadFile(file);
    event.target.value = "";  // choosing the same file again still fires "change"
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "dragend"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  // A photo dropped on the drop zone, or anywhere else on the page, is uploaded (and the browser
  // must not navigate away to show the file itself).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) uploadFile(file);
  });

  const labels = {
    exposure: (v) => formatEV(v),
    temperature: (v) => (Number(v) === 0 ? "0 (deterministic)" : Number(v).toFixed(2)),
    samples: (v) => String(v),
  };
  for (const name of Object.keys(labels)) {
    const input = $(name);
    const show = () => { $(`${name}-value`).textContent = labels[name](input.value); };
    input.addEventListener("input", show);
    input.addEventListener("change", () => { show(); scheduleJob(); });
    show();
  }
  $("run").addEventListener("click", () => submitJob());

  const split = $("split");
  split.addEventListener("input", () => {
    document.documentElement.style.setProperty("--pos", `${split.value}%`);
  });
  document.documentElement.style.setProperty("--pos", `${split.value}%`);
  $("after").addEventListener("load", fitCompare);
  window.addEventListener("resize", fitCompare);
  $("mode-slider").addEventListener("click", () => setMode("slider"));
  $("mode-side").addEventListener("click", () => setMode("side"));
}

// Show the comparison as large as the viewer allows (small previews are scaled up, large ones
// down); both images of the slider share the box, so they stay aligned.
function fitCompare() {
  const img = $("after");
  if (!img.naturalWidth || $("compare").hidden) return;
  const ratio = img.naturalWidth / img.naturalHeight;
  const maxWidth = $("viewer").clientWidth;
  const maxHeight = Math.max(200, Math.min(window.innerHeight * 0.68, 720));
  let height = maxHeight;
  let width = height * ratio;
  if (width > maxWidth) { width = maxWidth; height = width / ratio; }
  img.style.width = `${Math.floor(width)}px`;
  img.style.height = `${Math.floor(height)}px`;
}

function setMode(mode) {
  state.mode = mode;
  $("mode-slider").classList.toggle("active", mode === "slider");
  $("mode-side").classList.toggle("active", mode === "side");
  $("mode-slider").setAttribute("aria-pressed", String(mode === "slider"));
  $("mode-side").setAttribute("aria-pressed", String(mode === "side"));
  showViewer();
}

function showViewer() {
  const has = Boolean(state.upload);
  $("empty").hidden = has;
  $("compare").hidden = !has || state.mode !== "slider";
  $("side").hidden = !has || state.mode !== "side";
  fitCompare();
}

// ---------------------------------------------------------------------------------------------
// Uploads

async function uploadFile(file) {
  clearError();
  const info = state.info;
  if (info && file.size > info.max_upload_bytes) {
    showError(`"${file.name}" is ${megabytes(file.size)} MB, over this demo's ` +
      `${megabytes(info.max_upload_bytes)} MB upload limit; use a smaller file ` +
      "(or restart the demo with a larger --max-upload-mb).");
    return;
  }
  if (file.size === 0) {
    showError(`"${file.name}" is empty (0 bytes); choose an image file.`);
    return;
  }
  await sendUpload(`/api/uploads?name=${encodeURIComponent(file.name)}`, file, file.name);
}

async function useExample(name) {
  clearError();
  await sendUpload(`/api/uploads?example=${encodeURIComponent(name)}`, null, name);
}

async function sendUpload(url, body, name) {
  setStatus(`Uploading ${name}…`, "uploading", -1);
  let response, data;
  try {
    response = await fetch(url, {
      method: "POST", body,
      headers: body ? { "Content-Type": "application/octet-stream" } : {},
    });
    data = await readJSON(response);
  } catch (err) {
    setStatus("Upload failed.", "error", null);
    showError(`The upload of "${name}" failed (${err.message}); check that llflow demo is running and try again.`);
    return;
  }
  if (!response.ok) {
    setStatus(state.upload ? "Showing the previous photo." : "Choose a photo to start.", "error", null);
    showError(data.error || `the server refused "${name}" (${response.status})`);
    return;
  }
  state.upload = data;
  state.result = null;
  $("before").src = data.preview;
  $("side-before").src = data.preview;
  $("after").src = data.preview;          // until the result arrives
  $("side-after").src = data.preview;
  $("tag-right").textContent = "Result (working…)";
  $("extras").hidden = true;
  $("notes").textContent = "";
  setDownload(null);
  $("run").disabled = false;
  showViewer();
  submitJob();
}

// ---------------------------------------------------------------------------------------------
// Jobs

function scheduleJob() {
  if (!state.upload) return;
  clearTimeout(state.submitTimer);
  state.submitTimer = setTimeout(submitJob, 150);
}

async function submitJob() {
  if (!state.upload) return;
  clearError();
  const previous = state.job;
  clearTimeout(state.pollTimer);
  state.job = null;
  if (previous) {
    // Our own superseded request: no one is waiting for it any more.
    fetch(`/api/jobs/${previous}`, { method: "DELETE" }).catch(() => {});
  }
  const request = { upload: state.upload.id, ...params() };
  let response, data;
  try {
    response = await fetch("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    data = await readJSON(response);
  } catch (err) {
    setStatus("Request failed.", "error", null);
    showError(`Cannot reach the demo server (${err.message}); is llflow demo still running?`);
    return;
  }
  if (!response.ok) {
    setStatus("Not started.", "error", null);
    showError(data.error || `the server refused the request (${response.status})`);
    return;
  }
  state.job = data.id;
  showProgress(data);
  state.pollTimer = setTimeout(() => poll(data.id), 250);
}

async function poll(id) {
  if (id !== state.job) return;
  let response, data;
  try {
    response = await fetch(`/api/jobs/${id}`);
    data = await readJSON(response);
  } catch (err) {
    state.pollTimer = setTimeout(() => poll(id), 1000);
    return;
  }
  if (id !== state.job) return;
  if (!response.ok) {
    setStatus("Failed.", "error", null);
    showError(data.error || `status request failed (${response.status})`);
    return;
  }
  showProgress(data);
  if (data.state === "done") {
    showResult(data);
  } else if (data.state === "error") {
    showError(data.error);
  } else if (data.state === "queued" || data.state === "running") {
    state.pollTimer = setTimeout(() => poll(id), data.state === "queued" ? 500 : 300);
  }
}

function showProgress(data) {
  if (data.state === "queued") {
    const ahead = data.position;
    setStatus(ahead > 0 ? `Queued: ${ahead} job${ahead === 1 ? "" : "s"} ahead of yours…` : "Queued: starting next…",
      "queued", -1);
  } else if (data.state === "running") {
    setStatus(`Working: ${data.stage}… ${Math.round(data.progress * 100)}%`, "running", data.progress);
  } else if (data.state === "done") {
    setStatus(`Done in ${data.elapsed.toFixed(1)} s.`, "done", null);
  } else if (data.state === "error") {
    setStatus("Failed.", "error", null);
  } else if (data.state === "cancelled") {
    setStatus("Cancelled.", "cancelled", null);
  }
}

function setDownload(url, label, params) {
  const link = $("download");
  if (!url) {
    link.href = "#";
    link.classList.add("disabled");
    link.setAttribute("aria-disabled", "true");
    link.textContent = "Download result";
    delete link.dataset.exposure;
    return;
  }
  link.href = url;
  link.classList.remove("disabled");
  link.removeAttribute("aria-disabled");
  link.textContent = label;
  link.dataset.exposure = String(params.exposure);
  link.dataset.temperature = String(params.temperature);
  link.dataset.samples = String(params.samples);
}

function showResult(data) {
  const r = data.result;
  state.result = data;
  const p = data.params;
  const desc = `${formatEV(p.exposure)}, τ ${p.temperature}`;
  showImage(r.preview, `Result (${desc})`);
  setDownload(r.download, `Download result (${r.format}, ${r.width}×${r.height})`, p);
  $("download-info").textContent = `Saves ${r.download_name}: full resolution, ${r.format}.`;
  const notes = [...r.notes];
  if (p.exposure) notes.unshift(`Exposure: asked ${formatEV(p.exposure)}, reached ${formatEV(r.achieved_ev.toFixed(2))}.`);
  $("notes").textContent = notes.join(" ");

  const gallery = $("gallery");
  gallery.replaceChildren();
  if (r.samples.length) {
    $("gallery-tau").textContent = `(${r.samples.length} at τ = ${r.sample_temperature}; click one to compare it)`;
    const main = galleryButton(r.preview, "Result", () => {
      showImage(r.preview, `Result (${desc})`);
      setDownload(r.download, `Download result (${r.format}, ${r.width}×${r.height})`, p);
    });
    main.classList.add("selected");
    gallery.appendChild(main);
    for (const s of r.samples) {
      gallery.appendChild(galleryButton(s.preview, `Sample ${s.index + 1}`, () => {
        showImage(s.preview, `Sample ${s.index + 1}`);
        setDownload(s.download, `Download sample ${s.index + 1} (${r.format}, ${r.width}×${r.height})`, p);
      }));
    }
    $("uncertainty").src = r.uncertainty.preview;
    $("uncertainty-scale").textContent = `≥ ${r.uncertainty.scale.toFixed(3)}`;
    $("uncertainty-download").href = r.uncertainty.download;
    $("uncertainty-raw").href = r.uncertainty.raw;
    $("extras").hidden = false;
  } else {
    $("extras").hidden = true;
  }
}

function galleryButton(src, title, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.title = title;
  const img = document.createElement("img");
  img.src = src;
  img.alt = title;
  button.appendChild(img);
  button.addEventListener("click", () => {
    for (const other of $("gallery").children) other.classList.remove("selected");
    button.classList.add("selected");
    onClick();
  });
  return button;
}

function showImage(src, label) {
  $("after").src = src;
  $("side-after").src = src;
  $("tag-right").textContent = label;
  $("side-caption").textContent = label;
}

document.addEventListener("DOMContentLoaded", init);
