// The Tessera dashboard: the queue, the pools, a submit form and one page per job, all through the public
// HTTP API (/v1/...). The bearer token, when the API needs one, is kept in this tab's sessionStorage.
"use strict";

const TOKEN_KEY = "tessera-token";
const $ = (selector) => document.querySelector(selector);
const state = { placement: {}, busy: {}, jobTimer: null, stream: null, jobId: null };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

function say(text, ok) {
  const box = $("#message");
  box.textContent = text || "";
  box.hidden = !text;
  box.className = ok ? "ok" : "";
}

// A call to the API: the parsed JSON (or text); an error's message (which names the field) is shown and thrown.
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const reply = await fetch(path, opts);
  const type = reply.headers.get("content-type") || "";
  const body = type.includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) {
    const message = body && body.error ? body.error.message : reply.status + " " + reply.statusText;
    if (reply.status === 401) { showToken(); say(message + ": enter one above"); }
    const err = new Error(message);
    err.status = reply.status;
    throw err;
  }
  return body;
}

function showToken() {
  $("#token-state").textContent = token() ? "token set" : "no token";
  $("#token-forget").hidden = !token();
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function progressCell(progress) {
  const td = document.createElement("td");
  td.className = "progress";
  const bar = document.createElement("progress");
  bar.max = progress.total || 1;
  bar.value = progress.done;
  td.append(bar, " " + progress.done + "/" + progress.total + " " + progress.unit + "s");
  return td;
}

function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleTimeString() : ""; }

// Jobs not ended first (the queue's order: priority, then submit time), then the ended ones, newest first.
function order(jobs) {
  const live = jobs.filter((j) => !j.done).sort((a, b) => b.priority - a.priority || a.submitted_at - b.submitted_at);
  const ended = jobs.filter((j) => j.done).sort((a, b) => (b.finished_at || 0) - (a.finished_at || 0));
  return live.concat(ended);
}

async function refreshQueue() {
  const page = await api("/v1/jobs?limit=1000");
  const rows = order(page.data).slice(0, 200).map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const link = document.createElement("a");
    link.href = "#job/" + job.id;
    link.textContent = job.id;
    const first = document.createElement("td");
    first.append(link);
    tr.append(first, cell(job.kind), cell(job.state, "state state-" + job.state), cell(job.priority, "priority"),
      cell(job.tenant), progressCell(job.progress), cell((state.placement[job.id] || []).join(", "), "workers"),
      cell(when(job.submitted_at)));
    return tr;
  });
  $("#queue tbody").replaceChildren(...rows);
  $("#queue-empty").hidden = rows.length > 0;
}

// Pools and workers; a worker's utilisation is its busy seconds' growth between two readings.
async function refreshPools() {
  const page = await api("/v1/pools");
  const now = performance.now() / 1000;
  const placement = {};
  const blocks = page.data.map((pool) => {
    const div = document.createElement("div");
    div.className = "pool";
    div.dataset.pool = pool.name;
    const title = document.createElement("h3");
    title.textContent = pool.name + " (" + pool.device + ", " + pool.workers.length + " workers)";
    const table = document.createElement("table");
    const head = document.createElement("tr");
    ["Worker", "Host", "PID", "Device", "Job", "Utilisation"].forEach((h) => {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    });
    table.append(head);
    pool.workers.forEach((w) => {
      const where = pool.name + ":" + w.index + "@" + (w.hostname || w.node_ip);
      if (w.job && w.job !== "busy") (placement[w.job] = placement[w.job] || []).push(where);
      const before = state.busy[w.index];
      let use = "";
      if (w.busy_s != null && before && now > before.t) {
        use = Math.round(Math.min(1, Math.max(0, (w.busy_s - before.s) / (now - before.t))) * 100) + "%";
      }
      if (w.busy_s != null) state.busy[w.index] = { s: w.busy_s, t: now };
      const tr = document.createElement("tr");
      tr.dataset.worker = w.index;
      tr.append(cell(w.index), cell(w.hostname || w.node_ip), cell(w.pid), cell(w.device), cell(w.job || "idle", "job"),
        cell(w.busy_s == null ? "busy" : use, "utilisation"));
      table.append(tr);
    });
    div.append(title, table);
    return div;
  });
  $("#pools").replaceChildren(...blocks);
  state.placement = placement;
}

// --- submit ------------------------------------------------------------------------------------------------
function formSpec(form) {
  const spec = { job: form.job.value };
  ["prompt", "negative_prompt", "model"].forEach((name) => {
    if (form[name].value.trim()) spec[name] = form[name].value;
  });
  const numbers = ["width", "height", "steps", "seed"].concat(spec.job === "video" ? ["frames"] : []);
  numbers.forEach((name) => {
    if (form[name].value.trim() !== "") spec[name] = Number(form[name].value);
  });
  return spec;
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const priority = form.priority.value.trim() === "" ? 0 : Number(form.priority.value);
    const job = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ spec: formSpec(form), priority: priority }),
    });
    say("Submitted job " + job.id, true);
    location.hash = "#job/" + job.id;
  } catch (err) {
    say(err.message);
  }
}

// --- one job -----------------------------------------------------------------------------------------------
function showJob(job) {
  $("#job-id").textContent = job.id;
  $("#job-state").textContent = job.state;
  $("#job-state").className = "state state-" + job.state;
  $("#job-kind").textContent = job.kind;
  $("#job-tenant").textContent = job.tenant;
  $("#job-priority").textContent = job.priority;
  $("#job-prompt").textContent = job.spec.prompt || "";
  $("#job-error").textContent = job.error || "";
  $("#job-workers").textContent = (state.placement[job.id] || []).join(", ");
  document.querySelectorAll(".video-job").forEach((el) => { el.hidden = job.kind !== "video"; });
  $("#stream-link").href = "/v1/jobs/" + job.id + "/stream.m3u8";
  showProgress(job.progress);
  $("#cancel-button").disabled = job.done;
  $("#priority-button").disabled = job.done;
  if (document.activeElement !== $("#priority-input")) $("#priority-input").value = job.priority;
  if (job.state === "succeeded" && job.result_url) showResult(job);
}

function showProgress(progress) {
  $("#job-progress").max = progress.total || 1;
  $("#job-progress").value = progress.done;
  $("#job-progress-text").textContent = progress.done + "/" + progress.total + " " + progress.unit + "s";
}

// The result through fetch (an <img src> cannot send the bearer token), shown from a blob URL.
async function showResult(job) {
  if ($("#result").dataset.job === job.id) return;
  $("#result").dataset.job = job.id;
  const reply = await fetch("/v1/jobs/" + job.id + "/result", { headers: headers() });
  if (!reply.ok) { $("#result").dataset.job = ""; return; }
  const url = URL.createObjectURL(await reply.blob());
  const element = document.createElement(job.kind === "video" ? "video" : "img");
  element.src = url;
  if (job.kind === "video") { element.controls = true; element.loop = true; } else { element.alt = "result of " + job.id; }
  $("#result").replaceChildren(element);
  const link = $("#result-link");
  link.href = url;
  link.download = job.id + (job.kind === "video" ? ".mp4" : ".png");
  link.hidden = false;
}

async function refreshLog(jobId) {
  try {
    const text = await api("/v1/jobs/" + jobId + "/logs");
    if (state.jobId === jobId) $("#job-log").textContent = text;
  } catch (err) { /* the job page shows the job's own errors */ }
}

// Server-sent events read through fetch (EventSource cannot send an Authorization header).
async function follow(jobId) {
  const controller = new AbortController();
  state.stream = controller;
  let reply;
  try {
    reply = await fetch("/v1/jobs/" + jobId + "/events", { headers: headers(), signal: controller.signal });
  } catch (err) { return; }
  if (!reply.ok) return;
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = "";
        chunk.split("\n").forEach((line) => {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        });
        if (data && state.jobId === jobId) onEvent(jobId, name, JSON.parse(data));
      }
    }
  } catch (err) { /* aborted: the page moved on */ }
}

function onEvent(jobId, name, data) {
  if (name === "state") {
    $("#job-state").textContent = data.state;
    $("#job-state").className = "state state-" + data.state;
    showProgress(data.progress);
    refreshLog(jobId);
  } else if (name === "progress") {
    showProgress(data);
  } else if (name === "preview") {
    $("#preview").src = data.image;
    $("#preview").dataset.unit = data.unit;
    $("#preview-unit").textContent = "at " + data.unit;
  } else if (name === "segment") {  // a finished block of a video, listed in its HLS playlist
    $("#stream-segments").textContent = (data.index + 1) + (data.index ? " blocks" : " block") + " playable";
  } else if (name === "done") {
    showJob(data);
    refreshLog(jobId);
  }
}

async function openJob(jobId) {
  state.jobId = jobId;
  $("#preview").removeAttribute("src");
  delete $("#preview").dataset.unit;
  $("#preview-unit").textContent = "";
  $("#result").replaceChildren();
  $("#result").dataset.job = "";
  $("#result-link").hidden = true;
  $("#stream-segments").textContent = "";
  $("#job-log").textContent = "";
  try {
    showJob(await api("/v1/jobs/" + jobId));
  } catch (err) {
    say(err.message);
    return;
  }
  refreshLog(jobId);
  follow(jobId);
  state.jobTimer = setInterval(async () => {
    try {
      const job = await api("/v1/jobs/" + jobId);
      if (state.jobId !== jobId) return;
      if (!job.done) await refreshPools();
      showJob(job);
      if (!job.done) refreshLog(jobId);
    } catch (err) { /* shown by the next action */ }
  }, 2000);
}

async function cancelJob() {
  try {
    showJob(await api("/v1/jobs/" + state.jobId + "/cancel", { method: "POST" }));
    refreshLog(state.jobId);
    say("Cancel asked for job " + state.jobId, true);
  } catch (err) { say(err.message); }
}

async function setPriority(event) {
  event.preventDefault();
  const raw = $("#priority-input").value.trim();
  try {
    const job = await api("/v1/jobs/" + state.jobId + "/priority", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ priority: raw === "" ? null : Number(raw) }),
    });
    $("#priority-input").blur();
    showJob(job);
    say("Job " + job.id + " now has priority " + job.priority, true);
  } catch (err) { say(err.message); }
}

// --- pages -------------------------------------------------------------------------------------------------
let farmTimer = null;

function route() {
  clearInterval(state.jobTimer);
  clearInterval(farmTimer);
  if (state.stream) state.stream.abort();
  state.jobId = null;
  const match = location.hash.match(/^#job\/([\w-]+)$/);
  $("#farm-view").hidden = !!match;
  $("#job-view").hidden = !match;
  if (match) {
    refreshPools().catch(() => {}).finally(() => openJob(match[1]));
    return;
  }
  const tick = async () => {
    try {
      await refreshPools();
      await refreshQueue();
    } catch (err) { say(err.status === 401 ? err.message + ": enter one above" : err.message); }
  };
  tick();
  farmTimer = setInterval(tick, 1000);
}

function showVideoFields() {
  const video = $("#submit-form").job.value === "video";
  document.querySelectorAll(".video-only").forEach((el) => { el.hidden = !video; });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("#token-input").value = "";
    say("");
    showToken();
    route();
  });
  $("#token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showToken();
    route();
  });
  $("#submit-form").addEventListener("submit", submit);
  $("#submit-form").job.addEventListener("change", showVideoFields);
  $("#cancel-button").addEventListener("click", cancelJob);
  $("#priority-form").addEventListener("submit", setPriority);
  window.addEventListener("hashchange", () => { say(""); route(); });
  showToken();
  showVideoFields();
  route();
});
