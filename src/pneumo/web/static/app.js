// pneumo web page: plain JavaScript, no build step, no third-party code. Talks only to the REST API.
// Boxes from the API are {x, y, width, height, confidence} in original-image pixels.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PRED = "#ff7800";   // pneumo.outputs prediction colour
  const TRUTH = "#28dc3c";  // pneumo.outputs ground-truth colour
  const CORRECTION = "#3b9cff";  // a reader's corrected boxes (worklist.js)

  const state = {
    apiKey: sessionStorage.getItem("pneumo.apiKey") || "",
    models: [],
    current: null,        // the API's JSON for the image on screen
    source: null,         // ImageData of the decoded 8-bit radiograph
    display: null,        // canvas holding the windowed radiograph
    heatmap: null,        // HTMLImageElement or null
    view: { scale: 1, tx: 0, ty: 0 },
    window: 255,
    level: 128,
    history: [],          // [{id, name, probability, model}]
    loadToken: 0,
    drawMode: false,      // drag draws a corrected box instead of panning (handled in worklist.js)
    corrections: [],      // [{x, y, width, height}] in original-image pixels
  };

  // ------------------------------------------------------------------ API helpers

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.apiKey) headers.set("X-API-Key", state.apiKey);
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_) { /* not JSON */ }
      if (response.status === 401) $("key-section").hidden = false;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return response;
  }

  function setStatus(message, isError = false) {
    const status = $("status");
    status.textContent = message || "";
    status.classList.toggle("error", Boolean(isError));
  }

  const pct = (p) => `${(100 * p).toFixed(1)}%`;
  const px = (v) => Math.round(v);

  // ------------------------------------------------------------------ models

  async function loadModels() {
    const select = $("model");
    try {
      const body = await (await api("/v1/models")).json();
      state.models = body.models || [];
      select.replaceChildren();
      for (const m of state.models) {
        const option = document.createElement("option");
        option.value = m.name;
        const family = m.family && m.family !== m.name ? ` (${m.family})` : "";
        option.textContent = `${m.name}${family}`;
        if (m.name === body.default) option.selected = true;
        select.append(option);
      }
      if (!state.models.length) {
        const option = document.createElement("option");
        option.textContent = "no models available";
        option.disabled = true;
        select.append(option);
        setStatus("This server has no trained models yet.", true);
      }
      describeModel();
    } catch (error) {
      setStatus(`Could not list models: ${error.message}`, true);
    }
  }

  function describeModel() {
    const model = state.models.find((m) => m.name === $("model").value);
    const info = $("model-info");
    if (!model) { info.textContent = ""; return; }
    const parts = [`version ${model.version}`];
    const metrics = model.metrics || {};
    const labels = { val_map: "validation mAP", map: "mAP", val_auc: "validation AUC", auc: "AUC" };
    for (const [key, label] of Object.entries(labels)) {
      if (typeof metrics[key] === "number") parts.push(`${label} ${metrics[key].toFixed(3)}`);
    }
    if (model.members && model.members.length) parts.push(`members: ${model.members.join(", ")}`);
    info.textContent = parts.join(" · ");
  }

  // ------------------------------------------------------------------ upload

  async function analyse(file) {
    if (!file) return;
    const model = $("model").value;
    const form = new FormData();
    form.append("file", file, file.name);
    $("busy").hidden = false;
    setStatus(`Analysing ${file.name}…`);
    try {
      const query = model ? `?model=${encodeURIComponent(model)}` : "";
      const result = await (await api(`/v1/predictions${query}`, { method: "POST", body: form })).json();
      addToHistory(result, file.name);
      await show(result);
      setStatus("");
    } catch (error) {
      setStatus(`${file.name}: ${error.message}`, true);
    } finally {
      $("busy").hidden = true;
      $("file").value = "";
    }
  }

  function addToHistory(result, name) {
    state.history = state.history.filter((h) => h.id !== result.id);
    state.history.unshift({ id: result.id, name, probability: result.probability, model: result.model });
    try {
      sessionStorage.setItem("pneumo.history", JSON.stringify(state.history.slice(0, 50)));
    } catch (_) { /* storage full or blocked: the list still works for this page */ }
    renderHistory();
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren();
    $("history-empty").hidden = state.history.length > 0;
    for (const item of state.history) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.id = item.id;
      button.setAttribute("aria-current", String(Boolean(state.current && state.current.id === item.id)));
      button.setAttribute("aria-label", `${item.name}: ${pct(item.probability)}, model ${item.model}. Show again.`);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = item.name;
      const p = document.createElement("span");
      p.className = "p";
      p.textContent = pct(item.probability);
      const sub = document.createElement("span");
      sub.className = "sub";
      sub.textContent = item.model;
      button.append(name, p, sub);
      button.addEventListener("click", () => revisit(item));
      li.append(button);
      list.append(li);
    }
  }

  async function revisit(item) {
    try {
      setStatus(`Loading ${item.name}…`);
      const result = await (await api(`/v1/predictions/${encodeURIComponent(item.id)}`)).json();
      await show(result);
      setStatus("");
    } catch (error) {
      if (error.status === 404) {
        state.history = state.history.filter((h) => h.id !== item.id);
        renderHistory();
        setStatus(`${item.name} is no longer kept by the server; upload it again.`, true);
      } else {
        setStatus(`${item.name}: ${error.message}`, true);
      }
    }
  }

  // ------------------------------------------------------------------ showing a result

  async function fetchImage(url) {
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    try {
      const image = new Image();
      image.src = objectUrl;
      await image.decode();
      return image;
    } finally {
      setTimeout(() => URL.revokeObjectURL(objectUrl), 0);
    }
  }

  async function show(result) {
    const token = ++state.loadToken;
    $("canvas").dataset.rendered = "false";
    const image = await fetchImage(result.links.image);
    const heatmap = result.links.heatmap ? await fetchImage(result.links.heatmap).catch(() => null) : null;
    if (token !== state.loadToken) return;  // a newer request won the race

    const scratch = document.createElement("canvas");
    scratch.width = image.naturalWidth;
    scratch.height = image.naturalHeight;
    const ctx = scratch.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(image, 0, 0);
    state.source = ctx.getImageData(0, 0, scratch.width, scratch.height);
    state.display = scratch;
    state.heatmap = heatmap;
    state.current = result;
    $("show-heatmap").disabled = !heatmap;
    $("placeholder").hidden = true;
    applyWindow();
    fitView();
    renderResult(result);
    renderHistory();
    state.corrections = [];
    draw();
    $("canvas").dataset.rendered = "true";
    document.dispatchEvent(new CustomEvent("pneumo:shown", { detail: result }));
  }

  function boxText(box, withConfidence) {
    const where = `x ${px(box.x)}, y ${px(box.y)}, ${px(box.width)} × ${px(box.height)} px`;
    return withConfidence ? `${pct(box.confidence)} — ${where}` : where;
  }

  function fillBoxes(list, boxes, withConfidence, emptyText) {
    list.replaceChildren();
    if (!boxes.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = emptyText;
      list.append(li);
      return;
    }
    for (const box of boxes) {
      const li = document.createElement("li");
      li.className = "box";
      li.textContent = boxText(box, withConfidence);
      list.append(li);
    }
  }

  function renderResult(r) {
    $("result").hidden = false;
    $("result-empty").hidden = true;
    $("result").dataset.id = r.id;
    $("probability").textContent = pct(r.probability);
    const verdict = $("verdict");
    verdict.className = "verdict";
    if (typeof r.threshold === "number") {
      verdict.textContent = r.positive
        ? `At or above the model's operating threshold (${pct(r.threshold)}): review for opacity.`
        : `Below the model's operating threshold (${pct(r.threshold)}).`;
      verdict.classList.add(r.positive ? "positive" : "negative");
    } else {
      verdict.textContent = "";
    }
    $("model-name").textContent = `${r.model} · version ${r.model_version}`;
    $("image-size").textContent = `${r.image_width} × ${r.image_height} px, ${r.source_format.toUpperCase()}`;
    const t = r.timing_ms || {};
    $("timing").textContent = typeof t.predict === "number"
      ? `${Math.round((t.decode || 0) + t.predict)} ms (decode ${Math.round(t.decode || 0)}, model ${Math.round(t.predict)})`
      : "";
    fillBoxes($("boxes"), r.boxes, true, "No opacity boxes above the model's threshold.");
    const truth = r.ground_truth;
    $("truth-section").hidden = !truth;
    if (truth) fillBoxes($("truth"), truth.boxes, false, "No opacity (negative in the labels).");
    const warnings = $("warnings");
    warnings.replaceChildren(...(r.warnings || []).map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      return li;
    }));
    const nBoxes = r.boxes.length;
    $("canvas").setAttribute(
      "aria-label",
      `Chest radiograph ${r.image_width} by ${r.image_height} pixels; probability ${pct(r.probability)}; ` +
      `${nBoxes} predicted box${nBoxes === 1 ? "" : "es"}` + (truth ? `; ${truth.boxes.length} ground-truth box(es)` : ""),
    );
  }

  // ------------------------------------------------------------------ window / level

  function applyWindow() {
    if (!state.source) return;
    const lut = new Uint8ClampedArray(256);
    const low = state.level - state.window / 2;
    for (let v = 0; v < 256; v++) lut[v] = ((v - low) / state.window) * 255;
    const src = state.source.data;
    const out = new ImageData(state.source.width, state.source.height);
    const dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const g = lut[src[i]];
      dst[i] = g; dst[i + 1] = g; dst[i + 2] = g; dst[i + 3] = 255;
    }
    state.display.getContext("2d").putImageData(out, 0, 0);
    $("window").value = String(Math.round(state.window));
    $("level").value = String(Math.round(state.level));
    $("window-value").textContent = String(Math.round(state.window));
    $("level-value").textContent = String(Math.round(state.level));
  }

  let windowFrame = 0;
  function setWindow(width, level) {
    state.window = Math.min(255, Math.max(1, width));
    state.level = Math.min(255, Math.max(0, level));
    if (windowFrame) return;
    windowFrame = requestAnimationFrame(() => {
      windowFrame = 0;
      applyWindow();
      draw();
    });
  }

  // ------------------------------------------------------------------ drawing

  function canvasSize() {
    const canvas = $("canvas");
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    return { width, height, ratio };
  }

  function fitView() {
    if (!state.source) return;
    const { width, height } = canvasSize();
    const scale = Math.min(width / state.source.width, height / state.source.height) * 0.98;
    state.view = {
      scale,
      tx: (width - state.source.width * scale) / 2,
      ty: (height - state.source.height * scale) / 2,
    };
  }

  function drawBoxes(ctx, boxes, colour, withLabels, ratio) {
    const { scale } = state.view;
    ctx.lineWidth = (2 * ratio) / scale;
    ctx.strokeStyle = colour;
    ctx.font = `${(13 * ratio) / scale}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    for (const b of boxes) {
      ctx.strokeRect(b.x, b.y, b.width, b.height);
      if (withLabels) {
        const label = pct(b.confidence);
        const pad = (3 * ratio) / scale;
        const w = ctx.measureText(label).width + 2 * pad;
        const h = (13 * ratio) / scale + 2 * pad;
        ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
        ctx.fillRect(b.x, b.y, w, h);
        ctx.fillStyle = colour;
        ctx.fillText(label, b.x + pad, b.y + pad);
      }
    }
  }

  function draw() {
    const canvas = $("canvas");
    const { width, height, ratio } = canvasSize();
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!state.source || !state.current) return;
    const { scale, tx, ty } = state.view;
    ctx.setTransform(scale, 0, 0, scale, tx, ty);
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(state.display, 0, 0);
    if (state.heatmap && $("show-heatmap").checked) {
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(state.heatmap, 0, 0, state.source.width, state.source.height);
    }
    const r = state.current;
    // boxes are in original pixels; the image served is a bounded display copy (smaller for huge inputs)
    const kx = state.source.width / (r.image_width || state.source.width);
    const ky = state.source.height / (r.image_height || state.source.height);
    const shown = (boxes) => boxes.map((b) => ({ ...b, x: b.x * kx, y: b.y * ky, width: b.width * kx, height: b.height * ky }));
    if (r.ground_truth && $("show-truth").checked) drawBoxes(ctx, shown(r.ground_truth.boxes), TRUTH, false, ratio);
    if ($("show-boxes").checked) drawBoxes(ctx, shown(r.boxes), PRED, true, ratio);
    if (state.corrections.length) drawBoxes(ctx, shown(state.corrections), CORRECTION, false, ratio);
  }


  // ------------------------------------------------------------------ interaction

  function zoomAt(factor, cx, cy) {
    const v = state.view;
    const scale = Math.min(40, Math.max(0.05, v.scale * factor));
    const f = scale / v.scale;
    state.view = { scale, tx: cx - (cx - v.tx) * f, ty: cy - (cy - v.ty) * f };
    draw();
  }

  function setupViewer() {
    const canvas = $("canvas");
    let drag = null;

    canvas.addEventListener("wheel", (event) => {
      if (!state.source) return;
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      const ratio = window.devicePixelRatio || 1;
      zoomAt(Math.exp(-event.deltaY * 0.0015), (event.clientX - rect.left) * ratio, (event.clientY - rect.top) * ratio);
    }, { passive: false });

    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("pointerdown", (event) => {
      if (!state.source) return;
      const windowing = event.button === 2 || event.shiftKey;
      drag = {
        mode: windowing ? "window" : "pan", x: event.clientX, y: event.clientY,
        view: { ...state.view }, window: state.window, level: state.level,
      };
      canvas.setPointerCapture(event.pointerId);
      canvas.classList.add("dragging");
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.mode === "pan") {
        const ratio = window.devicePixelRatio || 1;
        state.view = { ...drag.view, tx: drag.view.tx + dx * ratio, ty: drag.view.ty + dy * ratio };
        draw();
      } else {
        setWindow(drag.window + dx, drag.level - dy);  // right: wider window; up: brighter level
      }
    });
    const end = (event) => {
      if (!drag) return;
      drag = null;
      canvas.classList.remove("dragging");
      if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("dblclick", resetView);
    canvas.addEventListener("keydown", (event) => {
      if (!state.source) return;
      const { width, height } = canvasSize();
      const step = 40 * (window.devicePixelRatio || 1);
      const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
      if (event.key in moves) {
        state.view.tx += moves[event.key][0];
        state.view.ty += moves[event.key][1];
        draw();
      } else if (event.key === "+" || event.key === "=") {
        zoomAt(1.25, width / 2, height / 2);
      } else if (event.key === "-" || event.key === "_") {
        zoomAt(0.8, width / 2, height / 2);
      } else if (event.key === "0") {
        resetView();
      } else {
        return;
      }
      event.preventDefault();
    });

    $("window").addEventListener("input", (e) => setWindow(Number(e.target.value), state.level));
    $("level").addEventListener("input", (e) => setWindow(state.window, Number(e.target.value)));
    for (const id of ["show-boxes", "show-truth", "show-heatmap"]) $(id).addEventListener("change", draw);
    $("reset-view").addEventListener("click", resetView);
    new ResizeObserver(() => { if (state.source) { fitView(); } draw(); }).observe($("stage"));
  }

  function resetView() {
    state.window = 255;
    state.level = 128;
    applyWindow();
    fitView();
    draw();
  }

  function setupUpload() {
    const input = $("file");
    input.addEventListener("change", () => analyse(input.files[0]));
    const hasFiles = (event) => Array.from(event.dataTransfer ? event.dataTransfer.types : []).includes("Files");
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", (event) => {
      if (event.relatedTarget === null) document.body.classList.remove("dragging");
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      document.body.classList.remove("dragging");
      analyse(event.dataTransfer.files[0]);
    });
    $("model").addEventListener("change", describeModel);
    $("api-key").addEventListener("change", (event) => {
      state.apiKey = event.target.value.trim();
      sessionStorage.setItem("pneumo.apiKey", state.apiKey);
      loadModels();
    });
  }

  // ------------------------------------------------------------------ downloads

  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function baseName() {
    const item = state.history.find((h) => h.id === state.current.id);
    const stem = item ? item.name.replace(/\.[^.]*$/, "") : state.current.id.slice(0, 8);
    return `pneumo-${stem}-${state.current.model}`;
  }

  function setupDownloads() {
    $("dl-json").addEventListener("click", () => {
      if (!state.current) return;
      saveBlob(new Blob([JSON.stringify(state.current, null, 2)], { type: "application/json" }), `${baseName()}.json`);
    });
    const fetchAndSave = (link, suffix) => async () => {
      if (!state.current) return;
      try {
        saveBlob(await (await api(state.current.links[link])).blob(), `${baseName()}${suffix}`);
      } catch (error) {
        setStatus(`Download failed: ${error.message}`, true);
      }
    };
    $("dl-csv").addEventListener("click", fetchAndSave("submission", ".csv"));
    $("dl-overlay").addEventListener("click", fetchAndSave("overlay", "-overlay.png"));
  }

  // ------------------------------------------------------------------ start

  function start() {
    try {
      state.history = JSON.parse(sessionStorage.getItem("pneumo.history") || "[]");
    } catch (_) {
      state.history = [];
    }
    if (state.apiKey) $("api-key").value = state.apiKey;
    setupViewer();
    setupUpload();
    setupDownloads();
    renderHistory();
    loadModels();
  }

  // what worklist.js uses
  window.pneumoApp = { api, show, setStatus, state, draw, pct };

  start();
})();
