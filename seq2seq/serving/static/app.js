// The page of `seq2seq serve`: pick a model, then translate, classify or generate with it.
// Plain DOM code, no libraries and no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const PANELS = { translation: "translate", classification: "classify", language_model: "generate" };
let models = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
  if (message && /api[ _]key/i.test(message)) $("key-box").open = true;
}

async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function current() { return models.find((m) => m.name === $("model").value); }

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function withButton(button, work) {
  showError("");
  button.disabled = true;
  try { await work(); } catch (err) { if (err.name !== "AbortError") showError(err.message); }
  finally { button.disabled = false; }
}

// ---- models -------------------------------------------------------------------------
async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    models = body.models;
  } catch (err) { showError(err.message); return; }
  showError("");
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.head.replace("_", " ")})`, m.name)));
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  choose();
}

function choose() {
  const model = current();
  for (const id of Object.values(PANELS)) $(id).hidden = true;
  if (!model) return;
  $(PANELS[model.head]).hidden = false;
  const parts = [model.parameters === null ? "ONNX export" : `${model.parameters.toLocaleString()} parameters`,
                 `${model.architecture.cell.toUpperCase()}`];
  if (model.source) parts.unshift(`${model.source} → ${model.target}`);
  if (model.labels) parts.unshift(`labels: ${model.labels.join(", ")}`);
  if (model.training && model.training.best !== null) parts.push(`best ${model.training.metric} ${Number(model.training.best).toFixed(2)}`);
  $("model-info").textContent = parts.join(" · ");
  if (model.head === "translation") {
    $("translate-beam").value = model.defaults.beam_size;
    $("translate-nbest").value = Math.min(3, model.defaults.beam_size);
    $("translate-alpha").value = model.defaults.length_penalty;
  }
  if (model.head === "classification") $("classify-topk").value = Math.min(5, model.labels.length);
  if (model.head === "language_model") {
    $("generate-max").value = model.defaults.max_tokens;
    // a label model: its labels to pick from; a feature model: "N features", typed comma-separated
    const labels = Array.isArray(model.conditions) ? model.conditions : [];
    $("generate-conditions").replaceChildren(...labels.map((c) => new Option(c, c)));
    $("generate-condition").value = labels.length ? labels[0] : "";
    $("generate-condition").placeholder = labels.length ? "a label" : `${model.conditions}, comma-separated`;
    $("generate-condition-label").hidden = model.conditions === null;
  }
}

// ---- translate ------------------------------------------------------------------------
function heatmap(table, attention) {
  table.replaceChildren();
  if (!attention) { table.textContent = "This model has no attention."; return; }
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const piece of attention.source) {
    const th = document.createElement("th");
    th.textContent = piece;
    head.appendChild(th);
  }
  const body = table.createTBody();
  attention.weights.forEach((row, t) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.textContent = attention.target[t];
    tr.appendChild(th);
    row.forEach((w, s) => {
      const td = tr.insertCell();
      td.style.background = `rgba(36, 87, 197, ${Math.min(1, Math.max(0, w)).toFixed(3)})`;
      td.title = `${attention.target[t]} ← ${attention.source[s]}: ${w.toFixed(3)}`;
    });
  });
}

async function translate() {
  $("translate-result").hidden = true;  // no earlier answer beside a new error
  const text = $("translate-text").value.replace(/\s*\n\s*/g, " ").trim();
  if (!text) { showError("texts: type a sentence to translate"); return; }
  const beam = numberOrNull("translate-beam");
  const body = { model: current().name, texts: [text], beam_size: beam, attention: true,
                 n_best: Math.min(numberOrNull("translate-nbest") || 1, beam || 1),
                 length_penalty: numberOrNull("translate-alpha") };
  const answer = await (await post("/v1/translate", body)).json();
  const found = answer.translations[0];
  $("translation-output").textContent = found.text;
  $("translate-nbest-list").replaceChildren(...found.n_best.map((h) => {
    const li = document.createElement("li");
    li.textContent = h.text || "(empty)";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = h.score.toFixed(3);
    li.appendChild(score);
    return li;
  }));
  heatmap($("heatmap"), found.attention);
  $("translate-result").hidden = false;
}

// ---- classify -------------------------------------------------------------------------
async function classify() {
  $("classify-result").hidden = true;
  const text = $("classify-text").value.replace(/\s*\n\s*/g, " ").trim();
  if (!text) { showError("texts: type a text to classify"); return; }
  const body = { model: current().name, texts: [text], top_k: numberOrNull("classify-topk") || 1 };
  const found = (await (await post("/v1/classify", body)).json()).predictions[0];
  $("classify-label").textContent = `${found.label} (${(100 * found.probability).toFixed(1)} %)`;
  $("classify-bars").replaceChildren(...found.top.map((entry) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = entry.label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * entry.probability).toFixed(1)} %`;
    bar.append(label, track, value);
    return bar;
  }));
  $("classify-result").hidden = false;
}

// ---- generate (streamed as Server-Sent Events) ---------------------------------------------
let stopper = null;

function* events(buffer) {  // complete "event: x\ndata: {...}\n\n" blocks of buffer.text
  let end;
  while ((end = buffer.text.indexOf("\n\n")) >= 0) {
    const block = buffer.text.slice(0, end);
    buffer.text = buffer.text.slice(end + 2);
    let name = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) name = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    yield [name, data ? JSON.parse(data) : null];
  }
}

async function generate() {
  const model = current();
  const body = { model: model.name, prompt: $("generate-prompt").value, stream: true,
                 max_tokens: numberOrNull("generate-max"), seed: numberOrNull("generate-seed"),
                 temperature: Number($("generate-temperature").value), top_p: Number($("generate-top-p").value) };
  if (!$("generate-condition-label").hidden) body.condition = $("generate-condition").value;
  const output = $("generate-output");
  output.textContent = body.prompt;
  $("generate-status").textContent = "generating…";
  stopper = new AbortController();
  $("generate-stop").hidden = false;
  try {
    const response = await post("/v1/generate", body, stopper.signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += decoder.decode(value, { stream: true });
      for (const [name, data] of events(buffer)) {
        if (name === "token") output.textContent += data.text;
        else if (name === "error") throw new Error(data.error);
        else if (name === "done") {
          const sample = data.samples[0];
          output.textContent = sample.text;
          $("generate-status").textContent = `${sample.tokens} tokens, ${sample.finished ? "ended" : "stopped at max tokens"}` +
            (sample.seed !== null ? `, seed ${sample.seed}` : "");
        }
      }
    }
  } catch (err) {
    $("generate-status").textContent = err.name === "AbortError" ? "stopped" : "";
    throw err;
  } finally {
    $("generate-stop").hidden = true;
    stopper = null;
  }
}

// ---- wiring ---------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", choose);
  $("api-key").value = sessionStorage.getItem("seq2seq-api-key") || "";
  $("api-key").addEventListener("change", () => { sessionStorage.setItem("seq2seq-api-key", $("api-key").value); loadModels(); });
  $("translate-go").addEventListener("click", (e) => withButton(e.target, translate));
  $("classify-go").addEventListener("click", (e) => withButton(e.target, classify));
  $("generate-go").addEventListener("click", (e) => withButton(e.target, generate));
  $("generate-stop").addEventListener("click", () => stopper && stopper.abort());
  for (const id of ["generate-temperature", "generate-top-p"]) {
    $(id).addEventListener("input", () => { $(`${id}-value`).textContent = $(id).value; });
  }
  loadModels();
});
