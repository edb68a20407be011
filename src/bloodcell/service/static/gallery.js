// bloodcell web page: the gallery review of a kept sample, as a hematologist reviews a differential. Every white
// cell, grouped by class, in large crops cut by the server from the full-resolution photo (zoom: the photo's own
// pixels), flagged cells first. Reclassify with a number key per group (arrows move the selection, Enter agrees,
// z or Ctrl+Z takes the last change back with a new, audited decision) or by dragging a cell to another group; bins
// for platelets and smudges / not a cell. The target count (a lab setting) shows progress. Below: the photos with
// their boxes, where a box is moved or resized and a missed cell is added. Every change is saved as it is made;
// the selected cell is in the address (#sample=…&cell=…), so a reload resumes there. Uses samples.js and app.js.
"use strict";

const TILE_CROP_PX = 400; // crop size asked of the server (shown at 200 CSS px: sharp on a 2x screen)
const NOT_WHITE = ["platelet", "RBC", "WBC", "Platelets"]; // classes shown in a bin or not at all, not as a white-cell group
const PLATELET_BIN = "platelet (not a white cell)";
const SMUDGE_BIN = "smudge / not a cell";
const review = { selected: null, undo: [], showRed: false, adding: false, addAs: "" };

function cropUrl(cell, size = TILE_CROP_PX, context = 1.6) {
  return sampleUrl(store.sample.sample_id, `/cells/${cell.id}/crop?size=${size}&context=${context}`);
}

// Where a cell belongs: a white-cell class, the platelet bin or the smudge bin (null: not shown in the gallery).
function groupOf(cell) {
  if (cell.removed) return cell.label === "WBC" || cell.decision ? SMUDGE_BIN : null;
  if (cell.label === "Platelets") return cell.decision || cell.origin === "reviewer" ? PLATELET_BIN : null;
  if (cell.label !== "WBC") return null;
  if (NOT_WHITE.includes(cell.class)) return PLATELET_BIN;
  return cell.class || "not typed";
}

// The groups in order, each with the key that moves a cell there (1-9, then 0).
function groupsOf(sample) {
  const names = sample.classes.filter((c) => !NOT_WHITE.includes(c));
  const keyed = [...names, PLATELET_BIN, SMUDGE_BIN].map((name, i) => ({ name, key: i < 9 ? String(i + 1) : i === 9 ? "0" : "" }));
  const extra = new Set(sample.cells.map(groupOf).filter((g) => g && !keyed.some((k) => k.name === g)));
  return [...Array.from(extra, (name) => ({ name, key: "" })), ...keyed];
}

const flagged = (cell) => Boolean(cell.referral_reason);
const rank = (cell) => (flagged(cell) && !cell.decision ? 0 : flagged(cell) ? 1 : cell.decision ? 3 : 2);

function membersOf(sample) {
  const members = new Map(groupsOf(sample).map((g) => [g.name, []]));
  for (const cell of sample.cells) {
    const group = groupOf(cell);
    if (group) members.get(group).push(cell);
  }
  for (const cells of members.values()) cells.sort((a, b) => rank(a) - rank(b) || a.id - b.id);
  return members;
}

// The decision that moves ``cell`` to group ``name`` (null: it is there already).
function moveTo(cell, name) {
  if (groupOf(cell) === name) return null;
  if (name === SMUDGE_BIN) return { action: "remove" };
  if (name === PLATELET_BIN) return { action: "platelet" };
  return { action: "relabel", cell_class: name };
}

async function change(cell, decision, { undo = false, next = null } = {}) {
  const saved = await decide(cell, decision.action, decision.cell_class ?? null, { box: decision.box, undo });
  if (!saved) return;
  if (!undo) review.undo.push({ cellId: cell.id });
  if (next !== null) select(next);
  else select(cell.id);
}

async function undoLast() {
  const last = review.undo.pop();
  if (!last) {
    storeMessage("There is nothing of yours to take back on this page.");
    return;
  }
  const cell = store.sample.cells.find((c) => c.id === last.cellId);
  // the store puts the cell back as it was before that decision (class, box, bin) and takes the decision back
  await change(cell, { action: "confirm" }, { undo: true });
}

// ---- selection and the keyboard ----

function orderedIds() {
  return Array.from(document.querySelectorAll("#sample-view .tile"), (tile) => Number(tile.dataset.cell));
}

function select(id, focus = true) {
  review.selected = id;
  for (const tile of document.querySelectorAll("#sample-view .tile")) {
    const on = Number(tile.dataset.cell) === id;
    tile.classList.toggle("selected", on);
    tile.setAttribute("aria-selected", String(on));
    if (on && focus) tile.focus({ preventScroll: false });
  }
  if (store.sample) {
    const cell = id == null ? "" : `&cell=${id}`;
    history.replaceState(null, "", `#sample=${encodeURIComponent(store.sample.sample_id)}${cell}`);
  }
}

// The cell ``step`` tiles away; up and down move by the tiles in a row of the cell's group.
function neighbour(id, key) {
  const ids = orderedIds();
  const at = ids.indexOf(id);
  if (at < 0) return ids[0] ?? null;
  let step = key === "ArrowLeft" ? -1 : 1;
  if (key === "ArrowUp" || key === "ArrowDown") {
    const tile = document.querySelector(`#sample-view .tile[data-cell="${id}"]`);
    const row = Array.from(tile.parentElement.children).filter((t) => t.offsetTop === tile.offsetTop).length;
    step = (key === "ArrowUp" ? -1 : 1) * Math.max(1, row);
  }
  return ids[Math.min(Math.max(at + step, 0), ids.length - 1)];
}

function onKey(event, groups, editable) {
  if (event.target.closest("select, input, textarea, dialog") || event.altKey || event.metaKey) return;
  const id = review.selected;
  const cell = store.sample.cells.find((c) => c.id === id);
  if (event.key.startsWith("Arrow")) {
    event.preventDefault();
    select(neighbour(id, event.key));
  } else if (event.key.toLowerCase() === "z" && editable) {
    event.preventDefault();
    undoLast();
  } else if (event.ctrlKey) {
    return;
  } else if (event.key === "f" && cell) {
    event.preventDefault();
    zoom(cell);
  } else if (event.key === "Enter" && cell && editable && !cell.removed) {
    event.preventDefault();
    change(cell, { action: "confirm" }, { next: nextAfter(id) });
  } else if (editable && cell) {
    const group = groups.find((g) => g.key && g.key === event.key);
    if (!group) return;
    event.preventDefault();
    const decision = moveTo(cell, group.name);
    if (decision) change(cell, decision, { next: nextAfter(id) });
  }
}

function nextAfter(id) {
  const ids = orderedIds();
  const at = ids.indexOf(id);
  return at >= 0 && at + 1 < ids.length ? ids[at + 1] : id;
}

// The cell at the photo's own resolution, fitted to the screen; a click (or Enter) on it shows the photo's own
// pixels, scrolled so the cell (the crop's centre) is in the middle, and back.
function zoom(cell) {
  const frame = document.querySelector("#zoom .zoom-frame");
  frame.classList.remove("actual");
  $("zoom-image").src = cropUrl(cell, 0, 3);
  $("zoom-caption").textContent = `Cell ${cell.id} at the photo's own resolution (photo ${cell.photo + 1}), fitted to `
    + "the screen: click it for the photo's own pixels.";
  $("zoom").showModal();
}

function toggleActualPixels() {
  const frame = document.querySelector("#zoom .zoom-frame");
  frame.classList.toggle("actual");
  frame.scrollLeft = (frame.scrollWidth - frame.clientWidth) / 2;
  frame.scrollTop = (frame.scrollHeight - frame.clientHeight) / 2;
}

document.addEventListener("DOMContentLoaded", () => {
  $("zoom-image").addEventListener("click", toggleActualPixels);
  $("zoom-image").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    toggleActualPixels();
  });
});

// ---- the gallery ----

const sure = (confidence) => (confidence == null ? "" : ` ${Math.round(100 * confidence)}%`);

// The cell's call: the model's with its confidence, or a person's as theirs (with what the model said), never the
// model's confidence beside a person's class.
// Returns [the call, what it adds in smaller type].
function callWords(cell) {
  const now = cell.removed ? "not a cell" : cell.class || (cell.label === "WBC" ? "not typed" : BOX_NAMES[cell.label]);
  const model = cell.model_call;
  if (!model) return [now, " (added by a person)"];
  if (!cell.changed_by) return [model.confidence == null ? now : `${now} (${sure(model.confidence).trim()} sure)`, ""];
  const said = model.class ? `model said ${model.class}${sure(model.confidence)}` : "model gave no type";
  return [now, ` — changed by ${cell.changed_by}; ${said}`];
}

function tile(cell, groups, editable) {
  const node = el("article", { class: `tile cell-card${flagged(cell) ? " referred" : ""}${cell.decision ? " decided" : ""}`,
    "data-cell": String(cell.id), tabindex: "-1", role: "option", "aria-selected": "false", draggable: String(editable) });
  const image = el("img", { class: "crop", src: cropUrl(cell), alt: `cell ${cell.id}`, loading: "lazy", width: "200", height: "200",
    draggable: "false" });
  image.addEventListener("dblclick", () => zoom(cell));
  const [call, about] = callWords(cell);
  node.append(image, el("p", { class: "call" }, el("span", { text: call }), about ? el("span", { class: "was", text: about }) : ""),
    el("p", { class: "state", text: decisionWords(cell) }));
  if (editable) {
    const tools = el("div", { class: "cell-tools" });
    if (!cell.removed) {
      const agree = el("button", { type: "button", class: "secondary confirm", text: "Agree" });
      agree.addEventListener("click", () => change(cell, { action: "confirm" }));
      tools.append(agree);
    }
    const relabel = el("select", { class: "relabel", "aria-label": `move cell ${cell.id} to` },
      el("option", { value: "", text: "Change to…" }),
      ...groups.filter((g) => g.key && g.name !== groupOf(cell)).map((g) => el("option", { value: g.name, text: `${g.key} ${g.name}` })));
    relabel.addEventListener("change", () => { if (relabel.value) change(cell, moveTo(cell, relabel.value)); });
    tools.append(relabel);
    if (!cell.removed) {
      const remove = el("button", { type: "button", class: "link remove", text: "Not a white cell" });
      remove.addEventListener("click", () => change(cell, { action: "remove" }));
      tools.append(remove);
    }
    node.append(tools);
    node.addEventListener("dragstart", (event) => { event.dataTransfer.setData("text/plain", String(cell.id)); });
  }
  node.addEventListener("click", (event) => { if (!event.target.closest("button, select")) select(cell.id); });
  return node;
}

function groupSection(group, cells, groups, editable) {
  const bin = group.name === PLATELET_BIN || group.name === SMUDGE_BIN;
  const title = el("h5", {}, group.key ? el("kbd", { text: group.key }) : "", el("span", { text: ` ${group.name} ` }),
    el("span", { class: "count", text: `(${cells.length})` }));
  const section = el("section", { class: `group${bin ? " bin" : ""}${cells.length ? "" : " empty"}`, "data-group": group.name }, title);
  if (cells.length) {
    section.append(el("div", { class: "tiles", role: "listbox", "aria-label": group.name },
      ...cells.map((cell) => tile(cell, groups, editable))));
  }
  if (editable) {
    section.addEventListener("dragover", (event) => { event.preventDefault(); section.classList.add("dropping"); });
    section.addEventListener("dragleave", () => section.classList.remove("dropping"));
    section.addEventListener("drop", (event) => {
      event.preventDefault();
      section.classList.remove("dropping");
      const cell = store.sample.cells.find((c) => c.id === Number(event.dataTransfer.getData("text/plain")));
      const decision = cell && moveTo(cell, group.name);
      if (decision) change(cell, decision);
    });
  }
  return section;
}

async function setTarget(value) {
  try {
    await api("PUT", "/v1/lab/settings", { wbc_target: Number(value) });
    await openSample(store.sample.sample_id);
  } catch (err) {
    refusal(err);
  }
}

function progress(sample, members) {
  const whites = sample.cells.filter((c) => c.label === "WBC" && !c.removed && !NOT_WHITE.includes(c.class));
  const checked = whites.filter((c) => c.decision).length;
  const target = sample.wbc_target;
  const bar = el("progress", { max: String(target), value: String(Math.min(whites.length, target)),
    "aria-label": "white cells counted towards the target" });
  const words = whites.length >= target
    ? `${whites.length} white cells counted: the target of ${target} is reached.`
    : `${whites.length} of ${target} white cells counted: ${target - whites.length} more needed (add photos with "take a photo" or "choose files" below).`;
  const box = el("div", { class: "progress" }, bar, el("p", { class: "target", text: words }),
    el("p", { class: "checked", text: `${checked} of ${whites.length} checked; ${members.get(SMUDGE_BIN)?.length || 0} set aside as not a cell.` }));
  if (store.user?.role === "admin") {
    const choice = el("select", { class: "wbc-target", "aria-label": "white cells per differential (lab setting)" },
      ...[100, 200].map((n) => el("option", { value: String(n), text: `${n} white cells` })));
    choice.value = String(target);
    choice.addEventListener("change", () => setTarget(choice.value));
    box.append(el("label", { class: "setting" }, "Lab setting: a differential counts ", choice));
  }
  return box;
}

function galleryView(sample, editable) {
  const groups = groupsOf(sample);
  const members = membersOf(sample);
  const keys = groups.filter((g) => g.key).map((g) => `${g.key} ${g.name}`).join(", ");
  const help = editable
    ? [`Keyboard: arrows select a cell; a number moves it to that group (${keys}); Enter agrees; z takes your last `
      + "change back; f shows it at full resolution. Or drag a cell to another group.",
    "Flagged cells come first. Use \"Change to…\" under a cell to move it. Each decision is saved as you make it."]
    : ["Double-click a cell (or select it and press f) to see it at full resolution.", ""];
  const shown = groups.filter((g) => members.get(g.name).length || g.key);
  const empty = shown.filter((g) => !members.get(g.name).length);
  const gallery = el("div", { class: "gallery", tabindex: "0", "aria-label": "white cells by class" },
    empty.length ? el("div", { class: "empty-groups" }, el("span", { class: "hint", text: "No cells yet:" }),
      ...empty.map((g) => groupSection(g, [], groups, editable))) : "",
    ...shown.filter((g) => members.get(g.name).length).map((g) => groupSection(g, members.get(g.name), groups, editable)));
  gallery.addEventListener("keydown", (event) => onKey(event, groups, editable));
  return el("section", { class: "review-gallery" }, el("h4", { text: "White cells by class" }), progress(sample, members),
    el("p", { class: "hint keys" }, el("span", { class: "keyboard-help", text: help[0] }), " ", el("span", { text: help[1] })),
    gallery);
}

// ---- the photos: boxes, the red-cell layer, moving and resizing a box, adding a missed cell ----

function placeBox(node, [x1, y1, x2, y2], width, height) {
  node.style.left = `${(100 * x1) / width}%`;
  node.style.top = `${(100 * y1) / height}%`;
  node.style.width = `${(100 * (x2 - x1)) / width}%`;
  node.style.height = `${(100 * (y2 - y1)) / height}%`;
}

// Pointer drags on ``overlay`` in the photo's pixels: onDrag(start, now) while moving, onDone(start, end) at the end.
function dragging(overlay, image, target, onDrag, onDone) {
  let start = null;
  const point = (event) => {
    const rect = overlay.getBoundingClientRect();
    return [Math.min(Math.max((event.clientX - rect.left) / rect.width, 0), 1) * image.naturalWidth,
      Math.min(Math.max((event.clientY - rect.top) / rect.height, 0), 1) * image.naturalHeight];
  };
  target.addEventListener("pointerdown", (event) => {
    if (!target.isConnected) return;
    event.preventDefault();
    event.stopPropagation();
    target.setPointerCapture(event.pointerId);
    start = point(event);
  });
  target.addEventListener("pointermove", (event) => { if (start) onDrag(start, point(event)); });
  target.addEventListener("pointerup", (event) => {
    if (!start) return;
    const from = start;
    start = null;
    onDone(from, point(event));
  });
}

const rounded = (box) => box.map((v) => Math.round(v * 10) / 10);

function editableBox(cell, overlay, image) {
  const call = cell.class || BOX_NAMES[cell.label];
  const node = el("div", { class: `box ${cell.label.toLowerCase()} editable`, "data-cell": String(cell.id), "data-call": call,
    title: `${call}: drag to move, drag the corner to resize` });
  const handle = el("span", { class: "handle", title: "drag to resize" });
  node.append(handle);
  const show = (box) => placeBox(node, box, image.naturalWidth, image.naturalHeight);
  const finish = (box) => {
    if (box.some((v, i) => Math.abs(v - cell.box[i]) >= 1)) change(cell, { action: "move", box: rounded(box) });
    else show(cell.box);
  };
  const moved = (from, now) => {
    const [dx, dy] = [now[0] - from[0], now[1] - from[1]];
    const [x1, y1, x2, y2] = cell.box;
    return [x1 + dx, y1 + dy, x2 + dx, y2 + dy].map((v, i) => Math.max(0, Math.min(v, i % 2 ? image.naturalHeight : image.naturalWidth)));
  };
  const resized = (from, now) => {
    const [x1, y1] = cell.box;
    return [x1, y1, Math.max(x1 + 2, now[0]), Math.max(y1 + 2, now[1])];
  };
  dragging(overlay, image, node, (from, now) => show(moved(from, now)), (from, now) => finish(moved(from, now)));
  dragging(overlay, image, handle, (from, now) => show(resized(from, now)), (from, now) => finish(resized(from, now)));
  show(cell.box);
  return node;
}

async function addMissed(photo, box) {
  const sample = store.sample;
  const [label, cellClass] = review.addAs === "red cell" ? ["RBC", null] : review.addAs === "platelet" ? ["Platelets", null]
    : ["WBC", review.addAs];
  try {
    store.sample = await api("POST", sampleUrl(sample.sample_id, "/cells"),
      { photo, box: rounded(box), label, cell_class: cellClass, version: sample.version });
    storeMessage("");
    renderKept();
  } catch (err) {
    if (err.status === 409 && !err.message.includes("signed")) {
      await openSample(sample.sample_id);
      storeMessage("Someone else changed this sample since you opened it, so it was reloaded with their changes: please add the cell again.");
    } else refusal(err);
  }
}

function photoView(sample, position, editable) {
  const frame = el("div", { class: "frame" });
  const card = el("article", { class: "photo kept-photo", "data-photo": String(position) },
    el("h5", { text: `Photo ${position + 1}: ${sample.photos[position].name}` }), frame);
  photoImage(position).then((image) => {
    const shown = el("img", { src: image.src, alt: `photo ${position + 1} of sample ${sample.sample_id}` });
    const overlay = el("div", { class: `overlay${review.adding ? " drawing" : ""}` });
    for (const cell of sample.cells.filter((c) => c.photo === position && !c.removed)) {
      if (editable && cell.label !== "RBC") overlay.append(editableBox(cell, overlay, image));
      else {
        const node = el("div", { class: `box ${cell.label.toLowerCase()}`, "data-cell": String(cell.id),
          "data-call": cell.class || BOX_NAMES[cell.label] });
        placeBox(node, cell.box, image.naturalWidth, image.naturalHeight);
        overlay.append(node);
      }
    }
    if (editable) {
      const ghost = el("div", { class: "box missing", hidden: "" });
      overlay.append(ghost);
      const span = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
      dragging(overlay, image, overlay, (from, now) => {
        if (!review.adding) return;
        ghost.hidden = false;
        placeBox(ghost, span(from, now), image.naturalWidth, image.naturalHeight);
      }, (from, now) => {
        ghost.hidden = true;
        const box = span(from, now);
        if (review.adding && box[2] - box[0] >= 4 && box[3] - box[1] >= 4) addMissed(position, box);
      });
    }
    frame.append(shown, overlay);
  }).catch(() => frame.append(el("p", { class: "hint", text: "This photo could not be shown." })));
  return card;
}

function photosView(sample, editable) {
  const section = el("section", { class: `kept-photos${review.showRed ? " show-red" : ""}` }, el("h4", { text: "Photos" }));
  const red = el("input", { type: "checkbox", class: "show-red-cells" });
  red.checked = review.showRed;
  red.addEventListener("change", () => { review.showRed = red.checked; section.classList.toggle("show-red", red.checked); });
  const tools = el("div", { class: "photo-tools" }, el("label", {}, red, " Show red cells"));
  if (editable) {
    const kinds = [...sample.classes.filter((c) => !NOT_WHITE.includes(c)), "platelet", "red cell"];
    if (!kinds.includes(review.addAs)) review.addAs = kinds[0];
    const kind = el("select", { class: "add-as", "aria-label": "the missed cell is a" },
      ...kinds.map((k) => el("option", { value: k, text: k })));
    kind.value = review.addAs;
    kind.addEventListener("change", () => { review.addAs = kind.value; });
    const add = el("button", { type: "button", class: "secondary add-missed", text: review.adding ? "Done adding" : "Add a missed cell" });
    add.addEventListener("click", () => {
      review.adding = !review.adding;
      add.textContent = review.adding ? "Done adding" : "Add a missed cell";
      section.querySelectorAll(".overlay").forEach((o) => o.classList.toggle("drawing", review.adding));
    });
    tools.append(add, el("label", {}, " a ", kind));
    section.append(el("p", { class: "hint", text: "Drag a box to move it, or its corner to resize it. To add a cell the counter missed, "
      + "press \"Add a missed cell\", choose what it is and drag a box around it on the photo." }));
  }
  section.append(tools, ...sample.photos.map((_, position) => photoView(sample, position, editable)));
  return section;
}

// ---- counting on the page into the store ----

// Count ``files`` into the lab's store as the signed-in person: into the open sample (when the sample id field is
// empty or names it; e.g. a photo just taken), else as a new sample under the typed id; then open it for review.
// Returns how many were not kept (refused or unreadable).
async function countIntoStore(files) {
  const typed = $("sample-id").value.trim();
  const open = store.sample && store.sample.status !== "signed" && (!typed || typed === store.sample.sample_id)
    ? store.sample.sample_id : null;
  const id = open || typed;
  if (!id) {
    showError("Type the sample id first: photos you count while signed in are kept in the lab's samples under it.");
    return files.length;
  }
  let kept = false;
  let failed = 0;
  for (let start = 0; start < files.length; start += MAX_FILES_PER_REQUEST) {
    const chunk = files.slice(start, start + MAX_FILES_PER_REQUEST);
    setStatus(`Counting cells on ${plural(chunk.length, "photo", "photos")} of sample ${id} and keeping them...`);
    const fields = { sample_id: id };
    if (open || kept) fields.add_to_sample = "true";
    try {
      const body = await post("/v1/count", chunk, fields);
      kept = kept || Boolean(body.stored_sample);
      const unread = body.images.filter((image) => image.error);
      failed += unread.length;
      unread.forEach((image) => showError(image.error));
    } catch (err) {
      failed += chunk.length;
      if (err.status === 401) refusal(err);
      showError(chunk.length === 1 ? `${chunk[0].name}: ${err.message}` : err.message);
    }
  }
  if (kept) {
    await openSample(id);
    $("store").scrollIntoView({ block: "start" });
  }
  return failed;
}

// Called by renderKept (samples.js) after the sample view is drawn: the selection comes back.
function restoreSelection() {
  const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("cell")) || review.selected;
  const ids = orderedIds();
  if (!ids.length) return;
  select(ids.includes(wanted) ? wanted : ids[0], Boolean(wanted) && ids.includes(wanted));
}

function forgetReview() { Object.assign(review, { selected: null, undo: [], undoOf: null, adding: false }); }

const UNDOABLE = { decision: "confirm", relabel: "relabel", remove_box: "remove", move_box: "move" };

// The signed-in person's changes to the sample that z can still take back, from its audit trail (so a reload
// keeps them): their decisions in order, each undo taking back the latest one.
async function restoreUndo(id) {
  review.undo = [];
  review.undoOf = id;
  let entries;
  try {
    entries = await api("GET", sampleUrl(id, "/audit"));
  } catch (_) {
    return; // the stack stays empty: z says there is nothing to take back
  }
  for (const entry of entries) {
    if (entry.actor !== store.user?.name || !UNDOABLE[entry.action] || !entry.target.startsWith("cell:")) continue;
    if (entry.after?.undo) review.undo.pop();
    else review.undo.push({ cellId: Number(entry.target.slice(5)) });
  }
}
