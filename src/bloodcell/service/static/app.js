// bloodcell web page: sends dropped or chosen files to /v1/classify or /v1/count and shows the results.
// No framework, no build step; every text from the server or a file name goes through textContent.
"use strict";

const SMEAR_MIN_WIDTH = 500; // auto mode: images at least this wide are smear photos
const MAX_FILES_PER_REQUEST = 32; // the server's default per-request limit

const rows = []; // flat records for the CSV download

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

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

async function imageWidth(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const width = bitmap.width;
    bitmap.close();
    return width;
  } catch (_) {
    return null; // the browser cannot decode it (e.g. TIFF): let the server decide
  }
}

async function kindOf(file) {
  const chosen = mode();
  if (chosen !== "auto") return chosen;
  const width = await imageWidth(file);
  return width !== null && width >= SMEAR_MIN_WIDTH ? "smear" : "cell";
}

async function post(url, files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
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
    throw new Error(retry ? `${message} (retry in ${retry} s)` : message);
  }
  return body;
}

function percent(value) { return `${(100 * value).toFixed(1)}%`; }

function figure(src, caption) {
  return el("figure", {}, el("img", { src, alt: caption }), el("figcaption", { text: caption }));
}

function renderCell(result, file) {
  const card = el("article", { class: "card", "data-filename": result.filename });
  card.append(el("h3", { text: result.filename }));
  const thumbnail = figure(URL.createObjectURL(file), "image");
  thumbnail.querySelector("img").addEventListener("error", () => thumbnail.remove()); // e.g. TIFF or not an image
  const images = el("div", { class: "images" }, thumbnail);
  if (result.gradcam_png) images.append(figure(`data:image/png;base64,${result.gradcam_png}`, "Grad-CAM"));
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
  if (result.referred) card.append(el("p", { class: "flag", text: `Refer to a person: ${result.reason || "flagged"}` }));
  const list = el("ol", { class: "topk" });
  for (const item of result.top_k) {
    list.append(el("li", {}, el("span", { text: item.label }), el("span", { text: percent(item.probability) })));
  }
  card.append(list);
  return card;
}

function cellRecord(result) {
  return {
    kind: "cell", filename: result.filename, label: result.label ?? "",
    confidence: result.confidence ?? "", referred: result.referred ?? "", reason: result.reason ?? "",
    top_k: (result.top_k || []).map((t) => `${t.label}:${t.probability.toFixed(4)}`).join(";"),
    error: result.error ?? "",
  };
}

function describe(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function keyValueTable(title, data, columns) {
  const table = el("table");
  table.append(el("caption", { text: title }));
  const head = el("tr");
  for (const name of columns) head.append(el("th", { text: name }));
  table.append(head);
  for (const [name, value] of Object.entries(data || {})) {
    const row = el("tr", {}, el("td", { text: name }));
    const fields = value !== null && typeof value === "object" ? value : { count: value };
    if (fields.flag) row.classList.add("flagged");
    for (const column of columns.slice(1)) row.append(el("td", { class: "num", text: describe(fields[column]) }));
    table.append(row);
  }
  return table;
}

function columnsOf(data) {
  const columns = new Set();
  for (const value of Object.values(data || {})) {
    if (value !== null && typeof value === "object") Object.keys(value).forEach((k) => columns.add(k));
    else columns.add("count");
  }
  return ["type", ...columns];
}

function renderSmear(item) {
  const box = el("article", { class: "smear", "data-filename": item.filename });
  box.append(el("h3", { text: item.filename }));
  if (item.error) {
    box.append(el("p", { class: "message", text: item.error }));
    return box;
  }
  if (item.annotated_png) box.append(el("img", { src: `data:image/png;base64,${item.annotated_png}`, alt: `annotated ${item.filename}` }));
  box.append(keyValueTable("Cell counts", item.counts, ["type", "count"]));
  if (item.wbc_types && Object.keys(item.wbc_types).length) {
    box.append(keyValueTable("White-cell differential", item.wbc_types, columnsOf(item.wbc_types)));
  }
  return box;
}

function renderSample(sample) {
  const box = el("article", { class: "smear sample" }, el("h3", { text: "Whole sample" }));
  for (const [name, value] of Object.entries(sample)) {
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      box.append(keyValueTable(name, value, columnsOf(value)));
    } else {
      box.append(el("p", { text: `${name}: ${describe(value)}` }));
    }
  }
  return box;
}

function smearRecord(item) {
  const record = { kind: "smear", filename: item.filename, error: item.error ?? "" };
  for (const [name, value] of Object.entries(item.counts || {})) record[name] = value;
  for (const [name, value] of Object.entries(item.wbc_types || {})) {
    record[`wbc_${name}`] = value !== null && typeof value === "object" ? (value.count ?? JSON.stringify(value)) : value;
  }
  return record;
}

async function classify(files) {
  const explain = $("explain").checked ? "?explain=true" : "";
  for (let start = 0; start < files.length; start += MAX_FILES_PER_REQUEST) {
    const chunk = files.slice(start, start + MAX_FILES_PER_REQUEST);
    setStatus(`Classifying ${chunk.length} cell image(s)...`);
    try {
      const body = await post(`/v1/classify${explain}`, chunk);
      body.results.forEach((result, i) => {
        $("cell-results").append(renderCell(result, chunk[i]));
        rows.push(cellRecord(result));
      });
    } catch (err) {
      chunk.forEach((file) => rows.push({ kind: "cell", filename: file.name, error: err.message }));
      showError(chunk.length === 1 ? `${chunk[0].name}: ${err.message}` : err.message);
    }
  }
}

async function count(files) {
  for (const file of files) {
    setStatus(`Counting cells on ${file.name}...`);
    try {
      const body = await post("/v1/count", [file]);
      body.images.forEach((item) => {
        $("smear-results").append(renderSmear(item));
        rows.push(smearRecord(item));
      });
      if (body.sample && Object.keys(body.sample).length) $("smear-results").append(renderSample(body.sample));
    } catch (err) {
      rows.push({ kind: "smear", filename: file.name, error: err.message });
      showError(`${file.name}: ${err.message}`);
    }
  }
}

async function handle(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  $("errors").replaceChildren();
  const cells = [];
  const smears = [];
  for (const file of files) ((await kindOf(file)) === "smear" ? smears : cells).push(file);
  if (cells.length) await classify(cells);
  if (smears.length) await count(smears);
  setStatus(`Done: ${files.length} file(s).`);
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
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "bloodcell-results.csv" });
  document.body.append(link);
  link.click();
  link.remove();
}

function clearAll() {
  rows.length = 0;
  $("cell-results").replaceChildren();
  $("smear-results").replaceChildren();
  $("errors").replaceChildren();
  setStatus("");
  $("download-csv").disabled = true;
  $("clear").disabled = true;
}

async function showModel() {
  try {
    const response = await fetch("/health");
    if (response.ok) $("model-name").textContent = `model: ${(await response.json()).model}`;
  } catch (_) { /* the footer stays empty */ }
}

function init() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => { handle(input.files).finally(() => { input.value = ""; }); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    handle(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") input.click(); });
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearAll);
  showModel();
}

document.addEventListener("DOMContentLoaded", init);
