// pneumo worklist and review: stored results (flagged and unreviewed first), open one, agree / disagree /
// draw corrected boxes, with a comment. Uses window.pneumoApp from app.js. Review boxes are
// {x, y, width, height} in original-image pixels.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const app = window.pneumoApp;
  if (!app) return;
  const wl = { items: [], cursor: null, token: 0 };

  // flagged + unreviewed first, then unreviewed, then reviewed; newest first within each group
  const rank = (item) => (item.review_status === "unreviewed" ? (item.flagged ? 0 : 1) : 2);

  function query(cursor) {
    const params = new URLSearchParams({ limit: "50" });
    if ($("wl-status").value) params.set("status", $("wl-status").value);
    if ($("wl-flagged").checked) params.set("flagged", "true");
    if (cursor) params.set("cursor", String(cursor));
    return `/v1/predictions?${params}`;
  }

  async function loadWorklist(more = false) {
    const token = ++wl.token;
    try {
      const body = await (await app.api(query(more ? wl.cursor : null))).json();
      if (token !== wl.token) return;
      wl.items = more ? wl.items.concat(body.items) : body.items;
      wl.cursor = body.next_cursor;
      renderWorklist();
    } catch (error) {
      if (token === wl.token) app.setStatus(`Could not load the worklist: ${error.message}`, true);
    }
  }

  function renderWorklist() {
    const list = $("worklist");
    list.replaceChildren();
    const items = wl.items.map((item, i) => ({ item, i }))
      .sort((a, b) => rank(a.item) - rank(b.item) || a.i - b.i).map((x) => x.item);
    $("worklist-empty").hidden = items.length > 0;
    $("wl-more").hidden = !wl.cursor;
    const current = app.state.current && app.state.current.id;
    for (const item of items) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.id = item.id;
      button.dataset.status = item.review_status;
      button.dataset.flagged = String(item.flagged);
      button.setAttribute("aria-current", String(item.id === current));
      const name = document.createElement("span");
      name.className = "name";
      if (item.flagged) {
        const flag = document.createElement("span");
        flag.className = "flag";
        flag.textContent = "⚑ ";
        flag.title = "at or above the model's threshold";
        name.append(flag);
      }
      name.append(item.filename || item.id.slice(0, 8));
      const p = document.createElement("span");
      p.className = "p";
      p.textContent = app.pct(item.probability);
      const sub = document.createElement("span");
      sub.className = "sub";
      const when = new Date(item.created_at).toLocaleString();
      sub.textContent = `${item.review_status} · ${item.model} · ${when}`;
      button.append(name, p, sub);
      button.setAttribute("aria-label",
        `${item.flagged ? "flagged, " : ""}${item.review_status}: ${item.filename || item.id}, ${app.pct(item.probability)}. Open.`);
      button.addEventListener("click", () => openResult(item.id));
      li.append(button);
      list.append(li);
    }
  }

  async function openResult(id) {
    try {
      app.setStatus("Loading…");
      const result = await (await app.api(`/v1/predictions/${encodeURIComponent(id)}`)).json();
      await app.show(result);
      app.setStatus("");
    } catch (error) {
      app.setStatus(`Could not open the result: ${error.message}`, true);
    }
  }

  // ------------------------------------------------------------------ drawing corrected boxes

  // client coordinates -> original-image pixels (clamped to the image); the canvas shows the bounded display
  // copy, which is smaller than the original for huge inputs
  function toImage(clientX, clientY) {
    const rect = $("canvas").getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const { scale, tx, ty } = app.state.view;
    const { width, height } = app.state.source;
    const r = app.state.current || {};
    const x = ((clientX - rect.left) * ratio - tx) / scale;
    const y = ((clientY - rect.top) * ratio - ty) / scale;
    return {
      x: Math.min(width, Math.max(0, x)) * ((r.image_width || width) / width),
      y: Math.min(height, Math.max(0, y)) * ((r.image_height || height) / height),
    };
  }

  // in draw mode a plain drag draws a box; capture-phase listeners on the stage keep it from panning
  function setupDrawing() {
    const canvas = $("canvas");
    const stage = $("stage");
    let drawing = null;
    stage.addEventListener("pointerdown", (event) => {
      if (!app.state.drawMode || !app.state.source || event.target !== canvas || event.button !== 0 || event.shiftKey) return;
      event.stopPropagation();
      const start = toImage(event.clientX, event.clientY);
      drawing = { start, box: { x: start.x, y: start.y, width: 0, height: 0 } };
      app.state.corrections.push(drawing.box);
      canvas.setPointerCapture(event.pointerId);
    }, true);
    stage.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      event.stopPropagation();
      const p = toImage(event.clientX, event.clientY);
      Object.assign(drawing.box, {
        x: Math.min(p.x, drawing.start.x), y: Math.min(p.y, drawing.start.y),
        width: Math.abs(p.x - drawing.start.x), height: Math.abs(p.y - drawing.start.y),
      });
      app.draw();
    }, true);
    const end = (event) => {
      if (!drawing) return;
      event.stopPropagation();
      if (drawing.box.width < 2 || drawing.box.height < 2) app.state.corrections.pop();  // a click, not a box
      drawing = null;
      if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
      showDrawn();
      app.draw();
    };
    stage.addEventListener("pointerup", end, true);
    stage.addEventListener("pointercancel", end, true);
  }

  // ------------------------------------------------------------------ review

  function describeReview(result) {
    const r = result && result.review;
    const text = $("review-current");
    text.dataset.status = (result && result.review_status) || "unreviewed";
    if (!r) {
      text.textContent = "Not reviewed yet.";
      return;
    }
    const boxes = r.boxes ? `, ${r.boxes.length} box${r.boxes.length === 1 ? "" : "es"}` : "";
    const comment = r.comment ? ` — “${r.comment}”` : "";
    text.textContent = `Reviewed: ${r.decision}${boxes} by ${r.reviewer}, ${new Date(r.created_at).toLocaleString()}${comment}`;
  }

  function setDrawMode(on) {
    app.state.drawMode = on;
    $("rv-draw").setAttribute("aria-pressed", String(on));
    $("canvas").classList.toggle("drawing", on);
    showDrawn();
  }

  function showDrawn() {
    const n = app.state.corrections.length;
    const on = app.state.drawMode;
    $("rv-drawn").hidden = !on;
    $("rv-drawn").textContent = on
      ? `${n} box${n === 1 ? "" : "es"} drawn (drag on the image; an empty set means no opacity).`
      : "";
    $("rv-save-correction").hidden = !on;
    $("rv-clear").hidden = !on || n === 0;
  }

  async function submitReview(decision) {
    const result = app.state.current;
    if (!result) return;
    const body = { decision };
    const comment = $("rv-comment").value.trim();
    if (comment) body.comment = comment;
    if (decision === "corrected") {
      body.boxes = app.state.corrections.map((b) => ({ x: b.x, y: b.y, width: b.width, height: b.height }));
    }
    try {
      await app.api(`/v1/predictions/${encodeURIComponent(result.id)}/review`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const fresh = await (await app.api(`/v1/predictions/${encodeURIComponent(result.id)}`)).json();
      app.state.current = fresh;
      describeReview(fresh);
      $("rv-comment").value = "";
      setDrawMode(false);
      app.setStatus(`Review saved: ${decision}.`);
      loadWorklist();
    } catch (error) {
      app.setStatus(`Review not saved: ${error.message}`, true);
    }
  }

  async function whoami() {
    try {
      const me = await (await app.api("/v1/me")).json();
      $("whoami").textContent = `Signed in as ${me.name} (${me.role}).`;
    } catch (_) {
      $("whoami").textContent = "";
    }
  }

  function start() {
    $("wl-status").addEventListener("change", () => loadWorklist());
    $("wl-flagged").addEventListener("change", () => loadWorklist());
    $("wl-refresh").addEventListener("click", () => loadWorklist());
    $("wl-more").addEventListener("click", () => loadWorklist(true));
    $("rv-agree").addEventListener("click", () => submitReview("agree"));
    $("rv-disagree").addEventListener("click", () => submitReview("disagree"));
    $("rv-save-correction").addEventListener("click", () => submitReview("corrected"));
    $("rv-draw").addEventListener("click", () => setDrawMode(!app.state.drawMode));
    $("rv-clear").addEventListener("click", () => { app.state.corrections = []; app.draw(); showDrawn(); });
    $("api-key").addEventListener("change", () => { whoami(); loadWorklist(); });
    setupDrawing();
    document.addEventListener("pneumo:shown", (event) => {
      describeReview(event.detail);
      const review = event.detail.review;
      if (review && review.boxes) {  // a saved correction is drawn in blue (and can be edited)
        app.state.corrections = review.boxes.map((b) => ({ ...b }));
        app.draw();
      }
      setDrawMode(false);
      if (!wl.items.some((item) => item.id === event.detail.id)) loadWorklist();
      else renderWorklist();
    });
    whoami();
    loadWorklist();
  }

  start();
})();
