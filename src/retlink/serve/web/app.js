// The retlink page: no framework, no build step, nothing loaded from elsewhere.
// It talks to the server's own API: GET /v1/page (what is on), POST /v1/chat/completions with
// stream: true (one SSE chunk per graph node, then the answer), GET /v1/entities/{id}[/image],
// POST /v1/attack. The API key, when the server asks for one, lives in sessionStorage only.
"use strict";

const state = { config: null, image: null, imageName: "", lastEntity: null };
const $ = (sel, root = document) => root.querySelector(sel);
const KEY = "retlink.apiKey";

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    return body.error ? body.error.message : `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("#key-dialog");
    $("#key-form").addEventListener("submit", () => {
      sessionStorage.setItem(KEY, $("#key-input").value);
      resolve();
    }, { once: true });
    dialog.showModal();
    $("#key-input").focus();
  });
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY);
    await askKey();
    return api(path, options);
  }
  return resp;
}

// --- the image ---------------------------------------------------------------------------

function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function setImage(blob, name) {
  state.image = await readAsDataURL(blob);
  state.imageName = name;
  const preview = $("#preview");
  preview.hidden = false;
  preview.onerror = () => {
    preview.hidden = true;
    $("#preview-caption").textContent = `${name} (this browser cannot show it)`;
  };
  preview.src = state.image;
  $("#preview-caption").textContent = name;
  $("#preview-box").hidden = false;
  state.lastEntity = null;  // a new image: the attack has no linked entity to aim away from yet
  if (state.config.attack) $("#attack").hidden = false;
}

async function pickDemo() {
  const item = (state.config.demo || []).find((d) => d.id === $("#demo").value);
  if (!item) return;
  const resp = await api(item.image);
  if (!resp.ok) return showError(`cannot load the demo image: ${await errorMessage(resp)}`);
  await setImage(await resp.blob(), item.image.split("/").pop());
  $("#sentence").value = item.context;
}

// --- streaming a link --------------------------------------------------------------------

async function* sse(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function newRun(container) {
  container.replaceChildren($("#run-template").content.cloneNode(true));
  container.dataset.state = "running";
  return container;
}

async function link(container, image, sentence) {
  const run = newRun(container);
  const nodes = $(".nodes", run);
  const body = {
    model: state.config.model,
    stream: true,
    messages: [{ role: "user", content: [
      { type: "text", text: sentence },
      { type: "image_url", image_url: { url: image } },
    ] }],
  };
  const resp = await api("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!resp.ok) {
    run.dataset.state = "error";
    throw new Error(await errorMessage(resp));
  }
  const trace = [];
  let result = null;
  for await (const chunk of sse(resp)) {
    if (chunk.error) {
      run.dataset.state = "error";
      throw new Error(chunk.error.message);
    }
    if (chunk.retlink_node) {
      const ev = chunk.retlink_node;
      trace.push(ev);
      const li = document.createElement("li");
      li.dataset.node = ev.node;
      li.textContent = `${ev.node} — ${ev.seconds.toFixed(2)} s${ev.skipped ? ` (skipped: ${ev.skipped})` : ""}`;
      nodes.append(li);
    }
    if (chunk.retlink) result = chunk.retlink;
  }
  if (!result) throw new Error("the stream ended without a result");
  await render(run, result, trace);
  run.dataset.state = "done";
  return result;
}

// --- the result --------------------------------------------------------------------------

function finalScores(trace) {
  for (const ev of [...trace].reverse()) {
    if (ev.detail && ev.detail.final) return ev.detail.final;
  }
  return {};
}

const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));

async function render(run, result, trace) {
  const entity = result.entity;
  const name = $(".entity-name", run);
  const img = $(".entity-image", run);
  name.textContent = entity ? `${entity.name} (${entity.id})` : `NIL — no KB entity matches “${result.mention}”`;
  $(".entity-meta", run).textContent =
    `decided by ${result.decided_by}, score ${fmt(result.score)}${result.perturbed ? `; flagged as perturbed: ${result.perturbation_note}` : ""}`;
  $(".entity-description", run).textContent = entity ? entity.description : "";
  if (entity && entity.image_paths && entity.image_paths.length) {
    const resp = await api(`/v1/entities/${encodeURIComponent(entity.id)}/image`);
    if (resp.ok) {
      img.src = URL.createObjectURL(await resp.blob());
      img.alt = `Knowledge-base image of ${entity.name}`;
      img.hidden = false;
    }
  }
  $(".caption", run).textContent = result.caption ? `Caption: ${result.caption.text}` : "No caption.";
  const final = finalScores(trace);
  const rows = $(".candidates tbody", run);
  for (const c of result.candidates) {
    const tr = document.createElement("tr");
    if (entity && c.entity.id === entity.id) tr.className = "chosen";
    const cells = [
      `${c.entity.name} (${c.entity.id})`, fmt(c.text_score), fmt(c.image_score),
      c.alias_match ? "yes" : "no", fmt(c.score), fmt(final[c.entity.id]),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = text;
      tr.append(td);
    });
    rows.append(tr);
  }
  const ev = $(".evidence", run);
  if (!result.evidence.length) ev.innerHTML = "<li>No evidence was gathered.</li>";
  for (const e of result.evidence) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = e.url;
    a.textContent = e.title || e.url;
    a.rel = "noopener noreferrer";
    const p = document.createElement("p");
    p.textContent = e.text.length > 300 ? `${e.text.slice(0, 300)}…` : e.text;
    li.append(a, p);
    ev.append(li);
  }
  $(".reasoning", run).textContent = result.reasoning || "(none)";
  $(".rationale", run).textContent = result.rationale || "(none)";
  $(".answer", run).hidden = false;
}

// --- forms -------------------------------------------------------------------------------

async function onLink(event) {
  event.preventDefault();
  showError("");
  const sentence = $("#sentence").value.trim();
  if (!state.image) return showError("Choose an image first: upload, paste or pick a demo.");
  if (!/\[[^\]]+\]/.test(sentence)) return showError("Mark the mention in [brackets] in the sentence.");
  const button = $("#link-button");
  button.disabled = true;
  $("#run").hidden = false;
  try {
    const result = await link($('[data-run="main"]'), state.image, sentence);
    state.lastEntity = result.entity ? result.entity.id : null;
  } catch (e) {
    showError(e.message);
    if (!$('[data-run="main"] .nodes li')) $("#run").hidden = true;  // nothing to show but the error
  } finally {
    button.disabled = false;
  }
}

async function onAttack(event) {
  event.preventDefault();
  showError("");
  if (!state.image) return showError("Choose an image first: upload, paste or pick a demo.");
  const sentence = $("#sentence").value.trim();
  if (!/\[[^\]]+\]/.test(sentence)) return showError("Mark the mention in [brackets] in the sentence.");
  const button = $("#attack-button");
  button.disabled = true;
  try {
    const kind = $('input[name="kind"]:checked').value;
    const resp = await api("/v1/attack", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        image: state.image, attack: kind, eps: Number($("#eps").value),
        steps: kind === "fgsm" ? 1 : Number($("#steps").value), entity_id: state.lastEntity,
      }),
    });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const out = await resp.json();
    $("#img-clean").src = out.clean;
    $("#img-adv").src = out.adversarial;
    $("#img-diff").src = out.difference;
    $("#diff-caption").textContent =
      `Difference ×${out.magnify} (L-inf ${out.linf_255.toFixed(1)}/255, L2 ${out.l2.toFixed(2)}; ${out.seconds.toFixed(1)} s)`;
    $("#attack-images").hidden = false;
    await Promise.all([
      link($('[data-run="clean"]'), out.clean, sentence),
      link($('[data-run="adv"]'), out.adversarial, sentence),
    ]);
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  const resp = await fetch("/v1/page");
  state.config = await resp.json();
  if (state.config.needs_key && !sessionStorage.getItem(KEY)) await askKey();
  const select = $("#demo");
  for (const d of state.config.demo || []) {
    const opt = document.createElement("option");
    opt.value = d.id;
    opt.textContent = `${d.id}: ${d.context}`;
    select.append(opt);
  }
  select.addEventListener("change", pickDemo);
  $("#eps").max = state.config.max_eps;
  $("#steps").max = state.config.max_steps;
  $("#file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) setImage(f, f.name);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) {
      e.preventDefault();
      setImage(item.getAsFile(), "pasted image");
    }
  });
  $("#link-form").addEventListener("submit", onLink);
  $("#attack-form").addEventListener("submit", onAttack);
  document.body.dataset.ready = "true";
}

init().catch((e) => showError(`The page could not start: ${e.message}`));
