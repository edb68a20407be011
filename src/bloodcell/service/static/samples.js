// bloodcell web page: the lab's samples kept in the store (shown only when the server has one). A person signs in
// (the session is an HttpOnly cookie; its CSRF token lives only in this page's memory and is read back after a
// reload), sees the sample list, opens a sample and decides each white cell as it goes: every decision is saved
// in the store at once, so a reload resumes where the reviewer was. Uses el() and $() from app.js.
"use strict";

const STATUS_WORDS = {
  counted: "not reviewed",
  in_review: "in review",
  reviewed: "awaiting sign-off",
  signed: "signed",
};
const MAY = { technician: ["count", "review"], supervisor: ["count", "review", "sign", "adapt"], admin: ["adapt"] };
const ADAPT_POLL_MS = 2000; // how often the page asks how a running adapting job is doing
const FULL_DIFFERENTIAL = 100; // white cells a manual differential is read from
const store = { user: null, csrf: null, sample: null, photos: new Map(), adaptPoll: null, adaptation: null };

class StoreError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function may(permission) { return Boolean(store.user && MAY[store.user.role]?.includes(permission)); }

// A refusal or a note about the lab's samples, on a line fixed at the foot of the screen: seen wherever the reviewer
// is on the page (an aria-live alert); it stays until the next success or until dismissed.
function storeMessage(text) {
  const line = $("store-message");
  line.hidden = !text;
  if (!text) {
    line.replaceChildren();
    return;
  }
  const dismiss = el("button", { type: "button", class: "link dismiss", "aria-label": "dismiss this message", text: "×" });
  dismiss.addEventListener("click", () => storeMessage(""));
  line.replaceChildren(el("p", { class: "error", text }), dismiss);
}

function sampleUrl(id, rest = "") { return `/v1/samples/${encodeURIComponent(id)}${rest}`; }

async function api(method, url, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && store.csrf) init.headers["X-CSRF-Token"] = store.csrf;
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new StoreError(0, `The server could not be reached (${err.message}).`);
  }
  let answer = null;
  try { answer = await response.json(); } catch (_) { answer = null; }
  if (!response.ok) throw new StoreError(response.status, answer?.message || `The server answered ${response.status}.`);
  return answer;
}

function sentence(text) { return text ? `${text[0].toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? "" : "."}` : ""; }

// One sentence for a refused request; a lost session shows the sign-in form again.
function refusal(err, signingIn = false) {
  if (err.status === 401 && !signingIn) {
    signedOut();
    storeMessage("Your session has ended: please sign in again.");
  } else {
    storeMessage(sentence(err.message));
  }
}

// ---- signing in and out ----

function signedIn(user) {
  store.user = { name: user.name, role: user.role };
  store.csrf = user.csrf_token;
  $("sign-in").hidden = true;
  $("signed-in").hidden = false;
  $("who").textContent = `Signed in as ${user.name} (${user.role}).`;
}

function signedOut() {
  Object.assign(store, { user: null, csrf: null, sample: null });
  forgetReview();
  $("sign-in").hidden = false;
  $("signed-in").hidden = true;
  $("sample-list").replaceChildren();
  $("sample-view").replaceChildren();
}

async function signIn(event) {
  event.preventDefault();
  storeMessage("");
  try {
    signedIn(await api("POST", "/v1/session", { name: $("user-name").value.trim(), password: $("password").value }));
    $("password").value = "";
    await showList();
  } catch (err) {
    refusal(err, true);
  }
}

async function signOut() {
  try { await api("DELETE", "/v1/session"); } catch (_) { /* signed out either way */ }
  signedOut();
  history.replaceState(null, "", location.pathname);
}

// ---- the sample list ----

// A moment in local time, unambiguous in every locale: 2026-12-06 22:08.
function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())} ${two(t.getHours())}:${two(t.getMinutes())}`;
}

function badge(status) { return el("span", { class: `badge status-${status}`, text: STATUS_WORDS[status] || status }); }

function cellOf(label, ...children) {
  const td = el("td", { "data-label": label });
  for (const child of children) td.append(child);
  return td;
}

function listRow(sample) {
  const open = el("button", { type: "button", class: "link open-sample", text: sample.sample_id, title: sample.sample_id });
  open.addEventListener("click", () => openSample(sample.sample_id));
  const who = cellOf("Who");
  if (sample.counted_by) who.append(el("span", { text: `counted by ${sample.counted_by}` }));
  if (sample.signed_by) who.append(el("span", { text: `signed by ${sample.signed_by}` }));
  return el("tr", { "data-sample-id": sample.sample_id },
    cellOf("Sample", open), cellOf("Status", badge(sample.status)),
    cellOf("White cells", String(sample.counts.WBC ?? 0)), cellOf("Red cells", String(sample.counts.RBC ?? 0)),
    cellOf("Platelets", String(sample.counts.Platelets ?? 0)),
    cellOf("To review", String(sample.referred)),
    cellOf("Counted", when(sample.created_at)), who);
}

async function showList() {
  let kept;
  try {
    kept = await api("GET", "/v1/samples");
  } catch (err) {
    refusal(err);
    return;
  }
  const head = el("tr", {}, ...["Sample", "Status", "White cells", "Red cells", "Platelets", "To review", "Counted", "Who"]
    .map((title) => el("th", { text: title })));
  const list = el("table", { class: "sample-list" }, el("caption", { text: `${plural(kept.length, "sample", "samples")}, newest first` }),
    el("thead", {}, head), el("tbody", {}, ...kept.map(listRow)));
  $("sample-list").replaceChildren(kept.length ? list
    : el("p", { class: "hint", text: "No samples are kept yet." }));
}

// ---- one sample ----

async function openSample(id) {
  storeMessage("");
  try {
    store.sample = await api("GET", sampleUrl(id));
  } catch (err) {
    refusal(err);
    return;
  }
  const cell = new URLSearchParams(location.hash.slice(1)).get("cell");
  const same = new URLSearchParams(location.hash.slice(1)).get("sample") === id;
  history.replaceState(null, "", `#sample=${encodeURIComponent(id)}${same && cell ? `&cell=${encodeURIComponent(cell)}` : ""}`);
  if (!same) forgetReview();
  if (review.undoOf !== id) await restoreUndo(id);
  store.adaptation = null; // opened (or reloaded): the bank is read afresh
  renderKept();
}

function closeSample() {
  clearTimeout(store.adaptPoll);
  store.sample = null;
  forgetReview();
  $("sample-view").replaceChildren();
  history.replaceState(null, "", location.pathname);
  showList();
}

function photoImage(position) {
  const key = `${store.sample.sample_id}/${position}`;
  if (!store.photos.has(key)) {
    store.photos.set(key, new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("photo not readable"));
      image.src = sampleUrl(store.sample.sample_id, `/photos/${position}`);
    }));
  }
  return store.photos.get(key);
}

const DONE_WORDS = { confirm: "confirmed", relabel: "changed", remove: "removed (not a white cell)", add: "added",
  move: "moved", platelet: "called a platelet" };

function decisionWords(cell) {
  if (!cell.decision) return cell.referral_reason ? `Needs a decision: ${cell.referral_reason}.` : "Not yet checked.";
  return `${sentence(DONE_WORDS[cell.decision.action] || cell.decision.action).slice(0, -1)} by ${cell.decision.by}, ${when(cell.decision.at)}.`;
}

// Save one decision on ``cell`` (``extra``: a moved box, or that it takes back the last one); true when saved.
async function decide(cell, action, cellClass = null, extra = {}) {
  const sample = store.sample;
  try {
    store.sample = await api("POST", sampleUrl(sample.sample_id, "/decisions"),
      { cell_id: cell.id, action, cell_class: cellClass, version: sample.version, ...extra });
    storeMessage("");
    renderKept();
    return true;
  } catch (err) {
    if (err.status === 409 && !err.message.includes("signed")) {
      await openSample(sample.sample_id);
      storeMessage("Someone else changed this sample since you opened it, so it was reloaded with their changes: "
        + "please check the cell and decide again.");
    } else {
      refusal(err);
    }
    return false;
  }
}

function exportLink(format, text) {
  return el("a", { class: "button secondary", href: sampleUrl(store.sample.sample_id, `/export?format=${format}`),
    download: "", text });
}

// A button that changes the sample's status; ``fields`` adds to the request (e.g. a reopening's reason), or
// returns the sentence that says what is missing.
function statusAction(text, path, className, fields = () => ({})) {
  const button = el("button", { type: "button", class: className, text });
  button.addEventListener("click", async () => {
    const sample = store.sample;
    const extra = fields();
    if (typeof extra === "string") {
      storeMessage(extra);
      return;
    }
    try {
      await api("POST", sampleUrl(sample.sample_id, path), { version: sample.version, ...extra });
      await openSample(sample.sample_id);
    } catch (err) {
      if (err.status === 409) await openSample(sample.sample_id);
      refusal(err);
    }
  });
  return button;
}

function sampleTables(sample) {
  const counts = table("Cells counted", [["Cell", "cell"], ["Count", "count", true]],
    [["White cells", "WBC"], ["Red cells", "RBC"], ["Platelets", "Platelets"]]
      .map(([cell, key]) => ({ cell, count: String(sample.counts[key] ?? 0) })));
  const types = Object.entries(sample.wbc_types);
  const differential = sample.typing_unavailable ? el("p", { class: "message", text: sample.typing_unavailable })
    : table(`White-cell differential (${plural(sample.wbc_classified, "cell", "cells")})`,
      [["Type", "type"], ["Count", "count", true], ["Percent", "percent", true]],
      types.map(([type, count]) => ({ type, count: String(count), percent: `${(sample.differential_percent[type] ?? 0).toFixed(1)}%` })));
  const few = !sample.typing_unavailable && sample.wbc_classified < FULL_DIFFERENTIAL
    ? el("p", { class: "caution", text: `Only ${plural(sample.wbc_classified, "white cell was", "white cells were")} typed: `
      + `a differential is usually read from ${FULL_DIFFERENTIAL}, so these percentages are rough.` }) : "";
  // the lab check of the sample's live white cells: a warning above the numbers it concerns, only when unfamiliar
  const check = sample.lab_check && sample.lab_check.unfamiliar_lab
    ? el("p", { class: "caution lab-check", role: "note", text: `Lab check: ${sample.lab_check.unfamiliar} of `
      + `${plural(sample.lab_check.checked, "white cell looks", "white cells look")} unlike the cells of every lab this `
      + "classifier learned from (stain, camera or magnification), so its typing here is unmeasured and may be far off. "
      + "Check every cell below; the cells you review let a supervisor adapt the classifier to your lab (the cell bank "
      + "below)." }) : "";
  return el("div", {}, check, el("div", { class: "sample-tables" }, counts, differential), few);
}

// ---- the lab's cell bank: how many more reviewed cells of each type adapting needs; a supervisor's button ----

function labName(lab) { return lab ? `lab ${lab}` : "this lab"; }

function bankWords(bank) {
  const held = Object.entries(bank.counts).map(([type, n]) => `${type} ${n}`).join(", ");
  const needed = Object.entries(bank.needed).map(([type, n]) => `${n} more ${type} needed`);
  return { held: held || "no reviewed white cell yet", needed };
}

// The section is drawn at once; its counts come with the lab's adaptation state (showAdaptation). The bank is read
// again only when the sample opened or its status changed, or it is reviewed (its edits then change the bank): not
// with every decision of a review.
function bankView(sample) {
  const section = el("section", { class: "cell-bank", "aria-label": "the lab's cell bank", "data-lab": sample.lab },
    el("h4", { text: `Cell bank of ${labName(sample.lab)}` }),
    el("p", { class: "hint bank-held", text: "Reading the lab's cell bank…" }),
    el("div", { class: "bank-list" }));
  section.append(el("p", { class: "lab-model", role: "status" }));
  if (may("adapt")) {
    const button = el("button", { type: "button", class: "secondary adapt-classifier", text: "Adapt the classifier to this lab" });
    button.addEventListener("click", () => startAdapting(sample.lab));
    section.append(el("div", { class: "export-buttons adapt-buttons" }, button),
      el("p", { class: "adapt-status", role: "status", "aria-live": "polite" }), el("p", { class: "flag adapt-risk", role: "status", "aria-live": "polite" }),
      el("div", { class: "adapt-keep" }));
  }
  const seen = store.adaptation;
  const key = `${sample.sample_id}|${sample.status}`;
  if (seen?.key === key && sample.status !== "reviewed") queueMicrotask(() => paintAdaptation(seen.answer));
  else showAdaptation(sample.lab);
  return section;
}

function showBank(bank) {
  const { held, needed } = bankWords(bank);
  const joins = ["reviewed", "signed"].includes(store.sample.status) ? ""
    : " This sample's cells join the bank when its review is finished.";
  document.querySelector(".bank-held").textContent = "Reviewed white cells whose type a person confirmed or corrected, "
    + `from the lab's reviewed and signed samples: ${held}. Adapting the classifier to the lab wants about `
    + `${bank.wanted} of each type.${joins}`;
  document.querySelector(".bank-list").replaceChildren(needed.length
    ? el("ul", { class: "bank-needed" }, ...needed.map((text) => el("li", { text })))
    : el("p", { class: "hint", text: `Every type has ${bank.wanted} reviewed cells or more: enough to adapt.` }));
}

function adaptationWords(answer) {
  const job = answer.job;
  if (!job) return answer.can_adapt ? "" : `Not yet: ${answer.why_not}.`;
  if (job.state === "running") return `Adapting, started by ${job.by} at ${when(job.started_at)}…`;
  if (job.state === "failed") return `Adapting, started by ${job.by} at ${when(job.started_at)}, failed: ${sentence(job.message)}`;
  const f = job.figures;
  const cells = Object.values(f.cells).reduce((a, b) => a + b, 0);
  const kept = f.kept?.length ? ` Kept on the lab's word: ${f.kept.join(", ")}.` : "";
  return `Adapted by ${job.by} on ${cells} cells: ${percent(f.cv_accuracy)} right in ${f.folds}-fold cross-validation `
    + `(${percent(f.cv_accuracy_before)} before). ${sentence(job.message)}${kept}`;
}

// Types a finished job's bank had no cells of that the adapted model may miss: before adapting, the model called
// some of the bank's cells so, and their calls could not be kept apart from those mistakes.
function riskWords(answer) {
  const atRisk = answer.job?.state === "done" ? answer.job.figures.at_risk || {} : {};
  const names = Object.keys(atRisk);
  if (!names.length) return "";
  const calls = names.map((name, i) => `${percent(atRisk[name])}${i ? "" : " of the bank's cells"} ${name}`);
  const listed = names.join(" or ");
  const tick = keepable(answer).length ? ", or tick the types the lab sees below to adapt again keeping the model's "
    + "calls of them that are more confident than its mistakes among the bank's cells" : "";
  return `The bank has no ${listed} cells, and before adapting the model called ${calls.join(" and ")}: if the lab `
    + `sees ${listed} cells, the adapted model may miss them. Add reviewed ${names.join(" and ")} cells and adapt `
    + `again${tick}.`;
}

// The at-risk white-cell types of a finished job (the bank's types: the service types white cells only).
function keepable(answer) {
  return answer.job?.state === "done"
    ? Object.keys(answer.job.figures.at_risk || {}).filter((name) => Object.hasOwn(answer.counts, name)) : [];
}

// The keepable types of a finished job, to tick and adapt again keeping them (`bloodcell adapt --keep`).
function keepChoice(answer) {
  const names = keepable(answer);
  if (!names.length) return [];
  const button = el("button", { type: "button", class: "secondary adapt-keeping", text: "Adapt again, keeping the ticked types" });
  const boxes = names.map((name) => el("input", { type: "checkbox", value: name }));
  const update = () => { button.disabled = !answer.can_adapt || !boxes.some((box) => box.checked); };
  boxes.forEach((box) => box.addEventListener("change", update));
  update();
  button.addEventListener("click", () => startAdapting(answer.lab, boxes.filter((box) => box.checked).map((box) => box.value)));
  return [el("fieldset", { class: "keep-types" }, el("legend", { text: "The lab sees these types:" }),
    ...names.map((name, i) => el("label", {}, boxes[i], ` ${name}`))), el("div", { class: "export-buttons" }, button)];
}

// Which model types the lab's new counts: the adapted one chosen (by whom, when), else the service's own.
function modelWords(answer) {
  const chosen = answer.classifier;
  return chosen ? `New counts of ${labName(answer.lab)} are typed with the adapted model ${chosen.model}, chosen by `
    + `${chosen.by} on ${when(chosen.at)}.`
    : `New counts of ${labName(answer.lab)} are typed with the service's own model, ${answer.service_model}.`;
}

// A supervisor's choice of model for the lab: the finished job's model, or back to the service's own.
function modelButton(answer) {
  const job = answer.job;
  const chosen = answer.classifier;
  if (job?.state === "done" && chosen?.model !== job.model) {
    const use = el("button", { type: "button", class: "use-model", text: `Use this model for ${labName(answer.lab)}` });
    use.addEventListener("click", () => chooseModel(answer.lab, job.model));
    return use;
  }
  if (!chosen) return null;
  const back = el("button", { type: "button", class: "secondary use-service-model",
    text: `Switch back to the service's model (${answer.service_model})` });
  back.addEventListener("click", () => chooseModel(answer.lab, null));
  return back;
}

async function showAdaptation(lab) {
  clearTimeout(store.adaptPoll);
  let answer;
  try {
    answer = await api("GET", `/v1/lab/adaptation?lab=${encodeURIComponent(lab)}`);
  } catch (err) {
    refusal(err);
    return;
  }
  if (store.sample?.lab !== lab) return; // another sample is open now
  store.adaptation = { key: `${store.sample.sample_id}|${store.sample.status}`, answer };
  paintAdaptation(answer);
}

function paintAdaptation(answer) {
  const model = document.querySelector(".lab-model");
  if (!model) return;
  showBank(answer);
  model.textContent = modelWords(answer);
  const status = document.querySelector(".adapt-status");
  if (!status) return;
  const button = document.querySelector(".adapt-classifier");
  const state = answer.job?.state;
  status.textContent = adaptationWords(answer);
  status.className = `adapt-status ${state || "idle"}`;
  document.querySelector(".adapt-risk").textContent = riskWords(answer);
  document.querySelector(".adapt-keep").replaceChildren(...keepChoice(answer));
  button.disabled = state === "running" || !answer.can_adapt;
  document.querySelector(".adapt-buttons").replaceChildren(button, ...[modelButton(answer)].filter(Boolean));
  clearTimeout(store.adaptPoll);
  if (state === "running") store.adaptPoll = setTimeout(() => showAdaptation(answer.lab), ADAPT_POLL_MS);
}

async function startAdapting(lab, keep = []) {
  storeMessage("");
  try {
    await api("POST", "/v1/lab/adaptation", { lab, keep });
  } catch (err) {
    refusal(err);
  }
  await showAdaptation(lab);
}

async function chooseModel(lab, model) {
  storeMessage("");
  try {
    await api("POST", "/v1/lab/classifier", { lab, model });
  } catch (err) {
    refusal(err);
  }
  await Promise.all([showAdaptation(lab), showServer()]);
}

function renderKept() {
  const sample = store.sample;
  const editable = sample.status !== "signed" && may("review");
  const back = el("button", { type: "button", class: "link", text: "← All samples" });
  back.addEventListener("click", closeSample);
  const made = [`Counted ${when(sample.created_at)}${sample.counted_by ? ` by ${sample.counted_by}` : ""}`];
  if (sample.signed_by) made.push(`signed by ${sample.signed_by} on ${when(sample.signed_at)}`);
  const actions = el("div", { class: "export-buttons" });
  if (editable && sample.status !== "reviewed") actions.append(statusAction("Review finished", "/finish", "finish"));
  if (sample.status === "reviewed" && may("sign")) actions.append(statusAction("Sign off", "/sign", "sign"));
  if (sample.status === "signed" && may("sign")) {
    const reason = el("input", { type: "text", class: "reopen-reason", maxlength: "2000", "aria-label": "why it is reopened",
      placeholder: "why it is reopened" });
    actions.append(reason, statusAction("Reopen", "/reopen", "secondary reopen",
      () => (reason.value.trim() ? { reason: reason.value.trim() }
        : "Write why the sample is reopened first: the reason is kept with the sample.")));
  }
  actions.append(exportLink("fhir", "Download FHIR"), exportLink("csv", "Download CSV"));

  const left = sample.cells.filter((c) => c.label === "WBC" && !c.removed && !c.decision).length;
  const signed = may("sign") ? "This sample is signed and read-only: reopen it, saying why, to change anything."
    : "This sample is signed and read-only: only a supervisor can reopen it.";
  const note = sample.status === "signed" ? signed
    : editable ? `${plural(left, "white cell is", "white cells are")} not yet checked.`
      : "You can read this sample; reviewing is for technicians and supervisors.";
  $("sample-view").replaceChildren(el("article", { class: "sample kept", "data-sample-id": sample.sample_id },
    back,
    el("h3", {}, el("span", { text: `Sample ${sample.sample_id}` }), badge(sample.status)),
    el("p", { class: "made", text: `${made.join("; ")}.` }),
    sampleTables(sample), actions, el("p", { class: "hint", text: note }),
    galleryView(sample, editable), bankView(sample), photosView(sample, editable)));
  $("sample-list").replaceChildren();
  restoreSelection();
}

// ---- start: shown only when the server keeps samples ----

async function initStore() {
  let answer;
  try {
    answer = await fetch("/v1/session", { credentials: "same-origin" });
  } catch (_) {
    return;
  }
  if (answer.status === 404) return; // no store on this server
  $("store").hidden = false;
  $("sign-in").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  if (!answer.ok) return; // not signed in yet
  signedIn(await answer.json());
  const opened = new URLSearchParams(location.hash.slice(1)).get("sample");
  if (opened) await openSample(opened);
  else await showList();
}

document.addEventListener("DOMContentLoaded", initStore);
