// bloodcell web page: classifies single-cell images (/v1/classify), counts the smear photos of a sample
// (/v1/count), combines a sample's photos into one differential and lets a person review its doubtful cells
// (/v1/review). No framework, no build step; every text from the server or a file name goes through textContent.
"use strict";

const MAX_FILES_PER_REQUEST = 32; // the server's default per-request limit
const SMEAR_LABELS = ["RBC", "WBC", "Platelets"];
const BOX_NAMES = { RBC: "red cell", WBC: "white cell", Platelets: "platelet" };
const HEATMAP_CAPTION = "LayerCAM: where the model's score is most sensitive; not the reason for the class";

const rows = []; // flat records for the CSV download
const samples = new Map(); // sample id -> the sample's photos, review items, decisions and report

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function setStatus(text) { $("status").textContent = text; }

function showError(text) { $("errors").append(el("div", { class: "error", text })); }

function plural(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

function percent(value) { return `${(100 * value).toFixed(1)}%`; }

function headers() {
  const key = $("api-key").value.trim();
  const sent = key ? { "X-API-Key": key } : {};
  // samples.js: the signed-in session's token; with it a count is kept in the lab's store (by those who may count)
  if (signedInToStore() && may("count")) sent["X-CSRF-Token"] = store.csrf;
  return sent;
}

function signedInToStore() { return typeof store !== "undefined" && Boolean(store.user && store.csrf); }

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function sampleId() { return $("sample-id").value.trim() || "sample"; }

function showNote(text) { $("kind-notes").append(el("li", { text })); }

// auto mode: the server's detector decides each photo by the cells it finds (/v1/kind), never by its size
async function sortByKind(files) {
  const cells = [];
  const smears = [];
  const chosen = mode();
  if (chosen !== "auto") {
    (chosen === "smear" ? smears : cells).push(...files);
    return { cells, smears };
  }
  setStatus(`Looking at what ${plural(files.length, "image holds", "images hold")}...`);
  for (let start = 0; start < files.length; start += MAX_FILES_PER_REQUEST) {
    const chunk = files.slice(start, start + MAX_FILES_PER_REQUEST);
    let results;
    try {
      results = (await post("/v1/kind", chunk)).results;
    } catch (err) {
      if (refusedCaller(err)) throw err; // the server refuses the caller: sending them as single cells would be too
      // none of them could be read, or the server is away: classifying them says why, file by file
      showNote(`Auto mode could not look at ${plural(chunk.length, "image", "images")} (${err.message}); `
        + "they were sent as single cells.");
      cells.push(...chunk);
      continue;
    }
    chunk.forEach((file, i) => {
      const result = results[i];
      if (result.kind === "smear") smears.push(file); else cells.push(file); // an unreadable one: classify reports it
      if (result.reason) showNote(`${file.name}: ${result.reason}.`);
    });
  }
  return { cells, smears };
}

function sayWhereTheSampleIdGoes(cells, smears) {
  const typed = $("sample-id").value.trim();
  if (!typed || !cells.length) return;
  showNote(smears.length
    ? `Sample ${typed} holds the ${plural(smears.length, "smear photo", "smear photos")}; the `
      + `${plural(cells.length, "single-cell image", "single-cell images")} ${cells.length === 1 ? "is" : "are"} `
      + "classified on its own, outside the sample."
    : `The sample id ${typed} is not used: ${plural(cells.length, "image was", "images were")} classified as single `
      + "cells, which belong to no sample. Choose 'smear photos' to count them as the sample's fields.");
}

async function send(url, form) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form, headers: headers() });
  } catch (err) {
    throw new Error(`the server could not be reached (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    const retry = response.headers.get("Retry-After");
    const error = new Error(retry ? `${message} (retry in ${retry} s)` : message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// A refusal of the caller (no key, not signed in, not allowed), not of the files: nothing else would be accepted.
function refusedCaller(err) { return err.status === 401 || err.status === 403; }

function post(url, files, fields = {}) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  for (const file of files) form.append("files", file, file.name);
  return send(url, form);
}

function download(text, name, type) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

function figure(src, caption, alt = caption) {
  return el("figure", {}, el("img", { src, alt }), el("figcaption", { text: caption }));
}

// ---- single cells ----

function renderCell(result, file) {
  const card = el("article", { class: "card", "data-filename": result.filename });
  card.append(el("h3", { text: result.filename }));
  const thumbnail = figure(URL.createObjectURL(file), "image");
  thumbnail.querySelector("img").addEventListener("error", () => thumbnail.remove()); // e.g. TIFF or not an image
  const images = el("div", { class: "images" }, thumbnail);
  if (result.gradcam_png) images.append(figure(`data:image/png;base64,${result.gradcam_png}`, HEATMAP_CAPTION, "heat map"));
  card.append(images);
  if (result.error) {
    card.classList.add("failed");
    card.append(el("p", { class: "message", text: result.error }));
    return card;
  }
  if (result.referred) card.classList.add("referred");
  card.append(el("p", { class: "label", text: result.label }));
  const bar = el("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
    "aria-valuenow": String(result.confidence), "aria-label": "confidence" });
  const fill = el("span");
  fill.style.width = percent(result.confidence);
  bar.append(fill);
  card.append(bar, el("p", { class: "confidence", text: `confidence ${percent(result.confidence)}` }));
  if (result.referred) card.append(el("p", { class: "flag", text: `Refer to a person: ${pageWords(result.reason) || "flagged"}` }));
  if (result.note && result.note !== result.reason) card.append(el("p", { class: "note", text: pageWords(result.note) }));
  card.append(topList(result.top_k));
  return card;
}

// The server's referral reasons and notes name command-line steps; a person at this page gets what to do here.
function pageWords(text) {
  if (!text) return text;
  if (text.startsWith("unfamiliar lab")) {
    return "unfamiliar lab: this cell's stain, camera or magnification is unlike those of the labs this model learned "
      + "from, so its call is a guess. Check it yourself. If your photos are smear fields, choose \"smear photos\" above and "
      + "send them again; to make the model fit your lab, keep the cells you reviewed: a supervisor can adapt it later.";
  }
  const several = /^(\d+) white cells in this image/.exec(text);
  if (several) {
    return `${several[1]} white cells in this image: the one nearest the centre was classified. To count them all, `
      + "choose \"smear photos\" above and send the image again.";
  }
  return text.replace(/`bloodcell [^`]*`/g, "a supervisor's tools");
}

function topList(topK) {
  const list = el("ol", { class: "topk" });
  for (const item of topK || []) {
    list.append(el("li", {}, el("span", { text: item.label }), el("span", { text: percent(item.probability) })));
  }
  return list;
}

function cellRecord(result) {
  return {
    kind: "cell", filename: result.filename, label: result.label ?? "",
    confidence: result.confidence ?? "", referred: result.referred ?? "", reason: result.reason ?? "",
    top_k: (result.top_k || []).map((t) => `${t.label}:${t.probability.toFixed(4)}`).join(";"),
    error: result.error ?? "",
  };
}

// Classify ``files``; returns how many were not classified (refused or unreadable).
async function classify(files) {
  const explain = $("explain").checked ? "?explain=true" : "";
  let failed = 0;
  for (let start = 0; start < files.length; start += MAX_FILES_PER_REQUEST) {
    const chunk = files.slice(start, start + MAX_FILES_PER_REQUEST);
    setStatus(`Classifying ${plural(chunk.length, "cell image", "cell images")}...`);
    try {
      const body = await post(`/v1/classify${explain}`, chunk);
      body.results.forEach((result, i) => {
        $("cell-results").append(renderCell(result, chunk[i]));
        rows.push(cellRecord(result));
        if (result.error) failed += 1;
      });
    } catch (err) {
      failed += chunk.length;
      chunk.forEach((file) => rows.push({ kind: "cell", filename: file.name, error: err.message }));
      showError(chunk.length === 1 ? `${chunk[0].name}: ${err.message}` : err.message);
    }
  }
  return failed;
}

// ---- samples: counting ----

function sampleFor(id) {
  if (!samples.has(id)) {
    samples.set(id, { id, states: [], photos: [], items: [], files: new Map(), classes: [], decisions: new Map(),
      missing: [], report: null, exports: null, node: null });
  }
  return samples.get(id);
}

function smearRecord(item, id) {
  const record = { kind: "smear", sample_id: id, filename: item.filename, error: item.error ?? "" };
  for (const [name, value] of Object.entries(item.counts || {})) record[name] = value;
  return record;
}

function addCounted(sample, body, chunk) {
  const added = new Set();
  body.images.forEach((image, i) => {
    rows.push(smearRecord(image, sample.id));
    if (image.error) {
      showError(image.error.startsWith(image.filename) ? image.error : `${image.filename}: ${image.error}`);
    } else if (sample.files.has(image.photo_id)) {
      showError(`${image.filename}: this photo is already in sample ${sample.id}; it was not added again.`);
    } else {
      added.add(image.photo_id);
      sample.files.set(image.photo_id, chunk[i]);
      sample.photos.push(image);
    }
  });
  sample.items.push(...body.review.filter((item) => added.has(item.photo_id)));
  sample.classes = body.classes;
  sample.detector = body.detector;
  if (body.state) {
    const photos = body.state.photos.filter((photo) => added.has(photo.photo_id));
    if (photos.length) sample.states.push({ ...body.state, photos });
  }
  return added.size;
}

// Count ``files`` as the photos of one sample; returns how many were not counted (refused or unreadable).
async function count(files) {
  if (signedInToStore() && may("count")) return countIntoStore(files); // gallery.js: kept and opened for review
  const sample = sampleFor(sampleId());
  let failed = 0;
  for (let start = 0; start < files.length; start += MAX_FILES_PER_REQUEST) {
    const chunk = files.slice(start, start + MAX_FILES_PER_REQUEST);
    setStatus(`Counting cells on ${plural(chunk.length, "photo", "photos")} of sample ${sample.id}...`);
    try {
      const body = await post("/v1/count", chunk, { sample_id: sample.id });
      failed += body.images.filter((image) => image.error).length;
      if (!addCounted(sample, body, chunk)) continue;
      sample.exports = null;
      sample.report = sample.states.length > 1 ? (await reviewRequest(sample, false)).report : body.report;
    } catch (err) {
      failed += chunk.length;
      chunk.forEach((file) => rows.push({ kind: "smear", sample_id: sample.id, filename: file.name, error: err.message }));
      showError(chunk.length === 1 ? `${chunk[0].name}: ${err.message}` : err.message);
    }
  }
  if (sample.photos.length) {
    renderSample(sample);
    sample.node.scrollIntoView({ block: "start" });
  }
  return failed;
}

// ---- samples: review ----

function corrections(sample) {
  return Array.from(sample.decisions, ([item, d]) => ({ item, decision: d.decision, label: d.label ?? null }));
}

function photosWithCells(sample) {
  const ids = new Set();
  const labels = new Map(sample.items.map((item) => [item.id, item.label]));
  for (const [item, d] of sample.decisions) {
    const label = d.decision === "accept" ? labels.get(item) : d.label;
    if (d.decision !== "wrong" && sample.classes.includes(label)) ids.add(item.slice(0, item.lastIndexOf("-")));
  }
  for (const cell of sample.missing) if (sample.classes.includes(cell.label)) ids.add(cell.photo_id);
  return Array.from(ids, (id) => sample.files.get(id)).filter(Boolean);
}

function reviewRequest(sample, reviewed, withPhotos = false) {
  const review = {
    sample_id: sample.id, states: sample.states, reviewed,
    corrections: reviewed ? corrections(sample) : [],
    missing: reviewed ? sample.missing.map((m) => ({ photo_id: m.photo_id, box: m.box, label: m.label })) : [],
  };
  const form = new FormData();
  form.append("review", new Blob([JSON.stringify(review)], { type: "application/json" }), "review.json");
  if (withPhotos) for (const file of photosWithCells(sample)) form.append("files", file, file.name);
  return send("/v1/review", form);
}

async function finishReview(sample) {
  $("errors").replaceChildren();
  if (sample.missing.some((m) => !m.label)) {
    showError("Choose the class of every missed cell you marked (or remove it) before finishing the review.");
    return;
  }
  setStatus(`Saving the review of sample ${sample.id}...`);
  let body;
  try {
    body = await reviewRequest(sample, true, true);
  } catch (err) {
    if (err.status !== 413) { showError(`Review of sample ${sample.id}: ${err.message}`); setStatus(""); return; }
    try {
      body = await reviewRequest(sample, true, false); // the photos were too large to send again: no cells
      body.cells_note = `The reviewed cells could not be cut: ${err.message}`;
    } catch (again) { showError(`Review of sample ${sample.id}: ${again.message}`); setStatus(""); return; }
  }
  sample.report = body.report;
  sample.exports = body;
  renderSample(sample);
  setStatus(`Sample ${sample.id} reviewed.`);
}

function setDecision(sample, id, value) {
  if (!value) sample.decisions.delete(id);
  else if (value.startsWith("relabel:")) sample.decisions.set(id, { decision: "relabel", label: value.slice(8) });
  else sample.decisions.set(id, { decision: value });
  showDecision(sample, id);
}

function decisionValue(d) {
  if (!d) return "";
  return d.decision === "relabel" ? `relabel:${d.label}` : d.decision;
}

function showDecision(sample, id) {
  const d = sample.decisions.get(id);
  const root = sample.node;
  if (!root) return;
  for (const node of root.querySelectorAll(`[data-item="${CSS.escape(id)}"]`)) {
    node.classList.toggle("decided", Boolean(d));
    node.classList.toggle("wrong", d?.decision === "wrong");
    if (node.tagName === "ARTICLE") node.querySelector("select.decision").value = decisionValue(d);
  }
}

function toggleWrong(sample, id) {
  setDecision(sample, id, sample.decisions.get(id)?.decision === "wrong" ? "" : "wrong");
}

// ---- samples: rendering ----

function table(caption, columns, records, flagged = () => false) {
  const node = el("table", {}, el("caption", { text: caption }));
  node.append(el("tr", {}, ...columns.map(([title, , numeric]) => el("th", numeric ? { class: "num", text: title } : { text: title }))));
  for (const record of records) {
    const row = el("tr", flagged(record) ? { class: "flagged" } : {});
    for (const [, key, numeric] of columns) row.append(el("td", numeric ? { class: "num", text: record[key] } : { text: record[key] }));
    node.append(row);
  }
  return node;
}

function reportSummary(report) {
  const parts = [plural(report.photos, "photo counted", "photos counted")];
  if (report.skipped) parts.push(plural(report.skipped, "file skipped", "files skipped"));
  parts.push(plural(report.white_cells_typed, "white cell typed", "white cells typed"));
  if (report.referred) parts.push(`${plural(report.referred, "cell waits", "cells wait")} for review`);
  return `${parts.join("; ")}.`;
}

function renderReport(report) {
  const box = el("div", { class: "report" });
  box.append(el("p", { class: "summary", text: reportSummary(report) }));
  if (report.review_summary) box.append(el("p", { class: "review-summary", text: report.review_summary }));
  box.append(table("Cells counted", [["Cell", "cell"], ["Count", "count", true]], report.counts));
  if (report.lab_check) box.append(el("p", { class: "message", text: report.lab_check }));
  if (report.typing_unavailable) box.append(el("p", { class: "message", text: report.typing_unavailable }));
  else {
    const records = report.differential.map((r) => ({ ...r, percent: `${r.percent.toFixed(1)}%` }));
    box.append(table("White-cell differential", [["Type", "type"], ["Count", "count", true], ["Percent", "percent", true],
      ["Reference interval", "reference"], ["Flag", "flag"]], records, (r) => Boolean(r.flag)));
  }
  if (report.notes.length) box.append(el("ul", { class: "notes" }, ...report.notes.map((n) => el("li", { text: n }))));
  if (report.trust) {
    box.append(el("h4", { text: "How much to trust this differential" }), el("p", { class: "trust", text: report.trust }));
  }
  return box;
}

function decisionSelect(sample, item) {
  const select = el("select", { class: "decision", "aria-label": `decision for cell ${item.id}` });
  select.append(el("option", { value: "", text: "Undecided" }));
  if (item.label) select.append(el("option", { value: "accept", text: `Accept: ${item.label}` }));
  for (const name of sample.classes) {
    if (name !== item.label) select.append(el("option", { value: `relabel:${name}`, text: `Change to ${name}` }));
  }
  select.append(el("option", { value: "wrong", text: "Not a white cell (box wrong)" }));
  select.value = decisionValue(sample.decisions.get(item.id));
  select.addEventListener("change", () => setDecision(sample, item.id, select.value));
  return select;
}

function reviewCard(sample, item) {
  const card = el("article", { class: "review-item", "data-item": item.id });
  if (item.crop_png) card.append(el("img", { src: `data:image/png;base64,${item.crop_png}`, alt: `cell ${item.id}` }));
  const call = item.label ? `${item.label}${item.confidence != null ? ` (${percent(item.confidence)})` : ""}` : "not typed";
  const box = item.id.slice(item.id.lastIndexOf("-") + 1);
  card.append(el("div", { class: "about" },
    el("p", { class: "call", text: `Model's call: ${call}` }), topList(item.top_k),
    el("p", { class: "reason", text: `Why it is here: ${item.reason}` }),
    el("p", { class: "where", text: `${item.filename}, box ${box}` }),
    el("label", { class: "decide" }, "Decision ", decisionSelect(sample, item))));
  return card;
}

function renderReview(sample) {
  const section = el("section", { class: "review", "aria-label": `Review of sample ${sample.id}` });
  section.append(el("h3", { text: `Cells for review (${sample.items.length})` }));
  section.append(el("p", { class: "hint", text: "Accept the model's call or choose the right class for each cell. "
    + "On the photos below, click a box to mark it wrong, or press \"Mark a missed cell\" and drag a box around a "
    + "cell the counter missed. Then finish the review: the differential is recomputed with your corrections." }));
  if (!sample.items.length) section.append(el("p", { text: "No cell was referred or doubtful." }));
  section.append(el("div", { class: "review-items" }, ...sample.items.map((item) => reviewCard(sample, item))));
  const finish = el("button", { type: "button", class: "finish-review", text: "Finish review" });
  finish.addEventListener("click", () => finishReview(sample));
  section.append(finish);
  return section;
}

function exportButton(text, action) {
  const button = el("button", { type: "button", class: "secondary", text });
  button.addEventListener("click", action);
  return button;
}

function renderExports(sample) {
  const body = sample.exports;
  const name = sample.id.replace(/[^A-Za-z0-9._-]+/g, "_");
  const box = el("div", { class: "exports" }, el("h3", { text: "Saved corrections" }));
  const buttons = el("div", { class: "export-buttons" },
    exportButton("Corrections (CSV)", () => download(body.corrections_csv, `${name}-corrections.csv`, "text/csv")),
    exportButton("Label Studio tasks (JSON)", () => download(JSON.stringify(body.labelstudio, null, 2), `${name}-labelstudio.json`, "application/json")),
    exportButton("Label Studio config (XML)", () => download(body.labelstudio_config, `${name}-labelstudio-config.xml`, "application/xml")));
  if (body.cells_zip) {
    const bytes = Uint8Array.from(atob(body.cells_zip), (c) => c.charCodeAt(0));
    buttons.append(exportButton("Reviewed cells (ZIP)", () => download(bytes, `${name}-cells.zip`, "application/zip")));
  }
  box.append(buttons);
  const counts = Object.entries(body.cells).map(([label, n]) => `${label} ${n}`).join(", ");
  if (counts) box.append(el("p", { class: "hint", text: `Reviewed cells: ${counts}. Download them and keep them with your other reviewed samples: a supervisor can use them to adapt the model to your lab.` }));
  if (body.cells_note) box.append(el("p", { class: "hint", text: body.cells_note }));
  return box;
}

function boxCall(box) { return box.wbc_type || BOX_NAMES[box.label] || box.label; }

function photoOverlay(sample, photo, reviewIds) {
  const overlay = el("div", { class: "overlay" });
  photo.boxes.forEach((box, index) => {
    const id = `${photo.photo_id}-${index + 1}`;
    const node = el("div", { class: `box ${String(box.label).toLowerCase()}${reviewIds.has(id) ? " for-review" : ""}`,
      "data-item": id, title: `box ${index + 1}: ${boxCall(box)} (click: box wrong)` });
    place(node, [box.x1, box.y1, box.x2, box.y2], photo);
    node.addEventListener("click", (event) => { event.stopPropagation(); toggleWrong(sample, id); });
    overlay.append(node);
  });
  return overlay;
}

function place(node, [x1, y1, x2, y2], photo) {
  node.style.left = `${(100 * x1) / photo.width}%`;
  node.style.top = `${(100 * y1) / photo.height}%`;
  node.style.width = `${(100 * (x2 - x1)) / photo.width}%`;
  node.style.height = `${(100 * (y2 - y1)) / photo.height}%`;
}

function enableDrawing(sample, photo, overlay, onDrawn) {
  let start = null;
  let ghost = null;
  const point = (event) => {
    const rect = overlay.getBoundingClientRect();
    const x = Math.min(Math.max((event.clientX - rect.left) / rect.width, 0), 1) * photo.width;
    const y = Math.min(Math.max((event.clientY - rect.top) / rect.height, 0), 1) * photo.height;
    return [x, y];
  };
  const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  overlay.addEventListener("pointerdown", (event) => {
    if (!overlay.classList.contains("drawing")) return;
    event.preventDefault();
    overlay.setPointerCapture(event.pointerId);
    start = point(event);
    ghost = el("div", { class: "box missing" });
    overlay.append(ghost);
  });
  overlay.addEventListener("pointermove", (event) => { if (start) place(ghost, boxOf(start, point(event)), photo); });
  overlay.addEventListener("pointerup", (event) => {
    if (!start) return;
    const box = boxOf(start, point(event)).map((v) => Math.round(v * 10) / 10);
    ghost.remove();
    start = null;
    if (box[2] - box[0] >= photo.width / 200 && box[3] - box[1] >= photo.height / 200) onDrawn(box);
  });
}

function missingList(sample, photo, overlay) {
  const list = el("ul", { class: "missing-cells" });
  const redraw = () => {
    list.replaceChildren();
    overlay.querySelectorAll(".box.missing").forEach((node) => node.remove());
    sample.missing.filter((m) => m.photo_id === photo.photo_id).forEach((cell, n) => {
      const marker = el("div", { class: "box missing", title: `missed cell ${n + 1}` });
      place(marker, cell.box, photo);
      overlay.append(marker);
      const select = el("select", { class: "missing-label", "aria-label": `class of missed cell ${n + 1}` },
        el("option", { value: "", text: "choose the class" }),
        ...[...sample.classes, ...SMEAR_LABELS.filter((l) => !sample.classes.includes(l))]
          .map((name) => el("option", { value: name, text: BOX_NAMES[name] ? `${BOX_NAMES[name]} (${name})` : name })));
      select.value = cell.label || "";
      select.addEventListener("change", () => { cell.label = select.value; });
      const remove = el("button", { type: "button", class: "link", text: "remove" });
      remove.addEventListener("click", () => { sample.missing.splice(sample.missing.indexOf(cell), 1); redraw(); });
      list.append(el("li", {}, `Missed cell ${n + 1}: `, select, " ", remove));
    });
  };
  redraw();
  return { list, redraw };
}

function renderPhoto(sample, photo, reviewIds) {
  const card = el("article", { class: "smear photo", "data-filename": photo.filename, "data-photo-id": photo.photo_id });
  card.append(el("h4", { text: photo.filename }));
  const frame = el("div", { class: "frame" });
  if (photo.annotated_png) frame.append(el("img", { src: `data:image/png;base64,${photo.annotated_png}`, alt: `counted ${photo.filename}` }));
  const overlay = photoOverlay(sample, photo, reviewIds);
  frame.append(overlay);
  const { list, redraw } = missingList(sample, photo, overlay);
  enableDrawing(sample, photo, overlay, (box) => { sample.missing.push({ photo_id: photo.photo_id, box, label: "" }); redraw(); });
  const mark = el("button", { type: "button", class: "secondary mark-missing", text: "Mark a missed cell" });
  mark.addEventListener("click", () => {
    const on = overlay.classList.toggle("drawing");
    mark.textContent = on ? "Done marking" : "Mark a missed cell";
  });
  const counts = Object.entries(photo.counts).map(([k, v]) => ({ cell: BOX_NAMES[k] ? `${BOX_NAMES[k]}s` : k, count: v }));
  card.append(frame, el("div", { class: "photo-tools" }, mark, list), table("Cells on this photo", [["Cell", "cell"], ["Count", "count", true]], counts));
  return card;
}

function renderSample(sample) {
  const node = sample.node || el("article", { class: "sample", "data-sample-id": sample.id });
  if (!sample.node) { $("smear-results").prepend(node); sample.node = node; }
  const reviewed = sample.report && sample.report.reviewed;
  const title = el("h2", {}, el("span", { class: "sample-name", text: `Sample ${sample.id}` }),
    el("span", { class: reviewed ? "badge reviewed" : "badge", text: reviewed ? "reviewed" : "not reviewed" }));
  const reviewIds = new Set(sample.items.map((item) => item.id));
  const counter = el("p", { class: "hint detector", text: `Counted by the detector ${sample.detector}.` });
  const parts = [title, counter, sample.report ? renderReport(sample.report) : null, renderReview(sample),
    sample.exports ? renderExports(sample) : null,
    el("div", { class: "photos" }, ...sample.photos.map((photo) => renderPhoto(sample, photo, reviewIds)))];
  node.replaceChildren(...parts.filter(Boolean));
  for (const id of sample.decisions.keys()) showDecision(sample, id);
}

// ---- page ----

async function handle(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  $("errors").replaceChildren();
  $("kind-notes").replaceChildren();
  let sorted;
  try {
    sorted = await sortByKind(files);
  } catch (err) {
    showError(sentence(err.message));
    setStatus(`Nothing was done: the server refused the ${plural(files.length, "file", "files")}.`);
    return;
  }
  const { cells, smears } = sorted;
  sayWhereTheSampleIdGoes(cells, smears);
  let failed = 0;
  if (cells.length) {
    const before = $("cell-results").children.length;
    failed += await classify(cells);
    $("cell-results").children[before]?.scrollIntoView({ block: "start" });
  }
  if (smears.length) failed += await count(smears);
  setStatus(failed ? `${failed} of ${plural(files.length, "file was", "files were")} not done: see why below.`
    : `Done: ${plural(files.length, "file", "files")}.`);
  $("download-csv").disabled = rows.length === 0;
  $("clear").disabled = rows.length === 0;
}

function csvCell(value) {
  const text = String(value ?? "");
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function downloadCsv() {
  const columns = [];
  for (const record of rows) for (const key of Object.keys(record)) if (!columns.includes(key)) columns.push(key);
  const lines = [columns.join(",")];
  for (const record of rows) lines.push(columns.map((c) => csvCell(record[c])).join(","));
  download(lines.join("\r\n") + "\r\n", "bloodcell-results.csv", "text/csv");
}

function clearAll() {
  rows.length = 0;
  samples.clear();
  $("cell-results").replaceChildren();
  $("smear-results").replaceChildren();
  $("errors").replaceChildren();
  $("kind-notes").replaceChildren();
  setStatus("");
  $("download-csv").disabled = true;
  $("clear").disabled = true;
}

async function showServer() {
  try {
    const response = await fetch("/health");
    if (!response.ok) return;
    const health = await response.json();
    const model = health.count_model ? `${health.count_model} (adapted to this lab; ${health.model} for single cells)`
      : health.model;
    $("model-name").textContent = `model: ${model} · detector: ${health.detector}`;
    $("threshold").textContent = `Cells typed with less than ${Math.round(100 * health.refer_below)}% confidence `
      + "are referred to a person (this server's referral threshold).";
  } catch (_) { /* the footer stays empty */ }
}

function init() {
  const zone = $("drop-zone");
  for (const input of [$("file-input"), $("camera-input")]) {
    input.addEventListener("change", () => { handle(input.files).finally(() => { input.value = ""; }); });
  }
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    handle(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file-input").click(); });
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearAll);
  showServer();
}

document.addEventListener("DOMContentLoaded", init);
