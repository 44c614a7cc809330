// ocak's console: plain JavaScript modules, no build step, served by `ocak serve` itself.
// Everything it shows comes from ocak's own API with the same key any client uses; text
// from the server goes into the page as text (textContent), never as markup.

const $ = (sel) => document.querySelector(sel);
const KEY = "ocak-key"; // sessionStorage: the key lives as long as the tab

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function say(message) {
  $("#status").textContent = message || "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function api(path, options = {}) {
  const init = { ...options, headers: headers(options.headers) };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) showLogin();
  if (!response.ok) throw new ApiError(response.status, await errorText(response));
  return response.status === 204 ? null : response.json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body.error ?? body.detail ?? body;
    return typeof error === "string" ? error : error.message ?? JSON.stringify(error);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// -- login and pages ------------------------------------------------------------------

function showLogin() {
  for (const section of document.querySelectorAll("section[data-page]")) section.hidden = true;
  $("#login").hidden = false;
  $("#login-key").focus();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#login-key").value.trim());
  $("#login-key").value = "";
  try {
    await api("/v1/models");
    $("#login").hidden = true;
    say("");
    route();
  } catch (error) {
    sessionStorage.removeItem(KEY);
    say(error.status === 401 ? "That key was refused." : error.message);
  }
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.hash = "#/chat";
  location.reload();
});

const pages = { chat: loadChat, models: loadModels, characters: loadCharacters, usage: loadUsage };

async function route() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "chat";
  const page = pages[name] ? name : "chat";
  for (const section of document.querySelectorAll("section[data-page]")) {
    section.hidden = section.dataset.page !== page;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#logout").hidden = !sessionStorage.getItem(KEY);
  say("");
  try {
    await pages[page]();
  } catch (error) {
    if (error.status !== 401) say(error.message);
  }
}

window.addEventListener("hashchange", route);

// -- playground -----------------------------------------------------------------------

const chat = { messages: [], controller: null, engines: {} };

async function loadChat() {
  const list = await api("/v1/models");
  const select = $("#chat-model");
  const chosen = select.value;
  select.replaceChildren();
  for (const card of list.data) {
    if (card.kind && !["chat", "adapter"].includes(card.kind)) continue;
    chat.engines[card.id] = card.meta?.engine ?? card.meta?.provider ?? "";
    select.append(el("option", { value: card.id }, card.id));
  }
  if (chosen) select.value = chosen;
}

$("#chat-mode").addEventListener("change", () => {
  $("#chat-schema-box").hidden = $("#chat-mode").value !== "json";
  $("#chat-tools-box").hidden = $("#chat-mode").value !== "tools";
});

$("#chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#chat-form").requestSubmit();
  }
});

$("#chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text || chat.controller) return;
  $("#chat-input").value = "";
  chat.messages.push({ role: "user", content: text });
  addTurn("user", text);
  send();
});

$("#chat-stop").addEventListener("click", () => chat.controller?.abort());
$("#chat-clear").addEventListener("click", () => {
  chat.messages = [];
  $("#chat-log").replaceChildren();
  $("#chat-regenerate").disabled = true;
});
$("#chat-regenerate").addEventListener("click", () => {
  if (chat.controller || chat.messages.at(-1)?.role !== "assistant") return;
  chat.messages.pop();
  $("#chat-log").lastElementChild?.remove();
  send();
});

function addTurn(role, text) {
  const body = el("span", { class: "text" }, text);
  const item = el("li", { class: role }, body);
  $("#chat-log").append(item);
  return item;
}

function requestBody() {
  const system = $("#chat-system").value.trim();
  const body = {
    model: $("#chat-model").value,
    messages: system ? [{ role: "system", content: system }, ...chat.messages] : chat.messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("#chat-temperature").value),
    max_tokens: Number($("#chat-max-tokens").value),
  };
  const mode = $("#chat-mode").value;
  if (mode === "json") {
    const schema = JSON.parse($("#chat-schema").value);
    body.response_format = { type: "json_schema", json_schema: { name: "answer", schema } };
  } else if (mode === "tools") {
    body.tools = JSON.parse($("#chat-tools").value);
    body.tool_choice = $("#chat-tool-choice").value;
  }
  return body;
}

async function send() {
  let body;
  try {
    body = requestBody();
  } catch (error) {
    say(`The schema or tools are not valid JSON: ${error.message}`);
    return;
  }
  const item = addTurn("assistant", "");
  item.setAttribute("aria-busy", "true");
  const text = item.querySelector(".text");
  const meta = el("span", { class: "meta" });
  item.append(meta);
  chat.controller = new AbortController();
  $("#chat-stop").disabled = false;
  $("#chat-send").disabled = true;
  $("#chat-regenerate").disabled = true;
  const started = performance.now();
  let first = null;
  let usage = null;
  let answer = "";
  const calls = [];
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: chat.controller.signal,
    });
    if (response.status === 401) showLogin();
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    const where = [response.headers.get("x-ocak-backend"), chat.engines[body.model],
      response.headers.get("x-ocak-locality")];
    for await (const chunk of events(response)) {
      if (chunk.error) throw new ApiError(500, chunk.error.message ?? "the stream failed");
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta ?? {};
      if (delta.content) {
        first ??= performance.now();
        answer += delta.content;
        text.textContent = answer;
      }
      for (const call of delta.tool_calls ?? []) {
        first ??= performance.now();
        const index = call.index ?? 0;
        calls[index] ??= { name: "", arguments: "" };
        calls[index].name += call.function?.name ?? "";
        calls[index].arguments += call.function?.arguments ?? "";
        text.textContent = calls.map((c) => `${c.name}(${c.arguments})`).join("\n");
      }
    }
    chat.messages.push({ role: "assistant", content: answer || text.textContent });
    meta.textContent = describe(where, usage, started, first);
    $("#chat-regenerate").disabled = false;
  } catch (error) {
    if (error.name === "AbortError") {
      chat.messages.push({ role: "assistant", content: answer });
      meta.textContent = `stopped · ${describe([], usage, started, first)}`;
      $("#chat-regenerate").disabled = false;
    } else {
      chat.messages.pop(); // the question stays on screen; ask again to retry it
      meta.textContent = "";
      text.classList.add("error");
      text.textContent = error.message;
    }
  } finally {
    item.removeAttribute("aria-busy");
    chat.controller = null;
    $("#chat-stop").disabled = true;
    $("#chat-send").disabled = false;
    $("#chat-input").focus();
  }
}

function describe(where, usage, started, first) {
  const now = performance.now();
  const parts = where.filter(Boolean);
  if (usage) parts.push(`${usage.prompt_tokens} + ${usage.completion_tokens} tokens`);
  if (first !== null) parts.push(`first token ${Math.round(first - started)} ms`);
  parts.push(`total ${Math.round(now - started)} ms`);
  if (usage && first !== null && now > first && usage.completion_tokens > 1) {
    parts.push(`${((usage.completion_tokens - 1) / ((now - first) / 1000)).toFixed(1)} tokens/s`);
  }
  return parts.join(" · ");
}

async function* events(response) {
  // Server-sent events: "data: {...}" lines, blank-line separated, "[DONE]" last.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// -- models ---------------------------------------------------------------------------

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function loadModels() {
  const list = await api("/v1/models");
  const rows = list.data.map((card) => {
    const meta = card.meta ?? {};
    const loaded = Boolean(meta.loaded);
    const action = el("button", { type: "button" }, loaded ? "Unload" : "Load");
    action.addEventListener("click", async () => {
      action.disabled = true;
      try {
        await api(`/v1/models/${encodeURIComponent(card.id)}/${loaded ? "unload" : "load"}`, { method: "POST" });
        await loadModels();
      } catch (error) {
        say(error.message);
        action.disabled = false;
      }
    });
    const local = meta.locality === "local" && (card.kind ?? "chat") === "chat";
    return el("tr", {},
      el("td", {}, card.id),
      el("td", {}, card.kind ?? "chat"),
      el("td", {}, meta.engine ?? meta.provider ?? card.owned_by ?? ""),
      el("td", {}, meta.error ? `error: ${meta.error}` : meta.state ?? (loaded ? "ready" : "")),
      el("td", {}, bytes(meta.resident_bytes ?? meta.size_bytes)),
      el("td", {}, meta.context_length ? String(meta.context_length) : ""),
      el("td", {}, local ? action : ""));
  });
  $("#models-table tbody").replaceChildren(...rows);
  await loadDoctor();
}

async function loadDoctor() {
  let report;
  try {
    report = await api("/v1/doctor");
  } catch (error) {
    $("#doctor-findings").replaceChildren(el("li", {}, error.message));
    return;
  }
  const items = report.findings.map((f) =>
    el("li", { class: `finding ${f.level}` }, `${f.level}: ${f.what}`, el("span", { class: "meta" }, f.fix)));
  if (!items.length) items.push(el("li", { class: "finding ok" }, "No problem found."));
  $("#doctor-findings").replaceChildren(...items);
}

$("#pull-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const model = $("#pull-model").value.trim();
  const bar = $("#pull-progress");
  const status = $("#pull-status");
  $("#pull-button").disabled = true;
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate until sizes are known
  status.textContent = `Pulling ${model}…`;
  try {
    const response = await fetch("/v1/models/pull", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model, stream: true }),
    });
    if (response.status === 401) showLogin();
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    for await (const e of events(response)) {
      if (e.error) throw new ApiError(500, e.error.message ?? "the pull failed");
      if (e.status === "success" && e.model) {
        bar.value = bar.max = 1;
        status.textContent = `Pulled ${e.model} (${bytes(e.size)}, ${e.engine}).`;
      } else if (e.total) {
        bar.max = e.total;
        bar.value = e.completed;
        status.textContent = `${e.status} ${e.file ?? ""}: ${bytes(e.completed)} of ${bytes(e.total)}`;
      } else if (e.status) {
        status.textContent = `${e.status}…`;
      }
    }
    $("#pull-model").value = "";
    await loadModels();
  } catch (error) {
    bar.hidden = true;
    status.textContent = `${model}: ${error.message}`;
  } finally {
    $("#pull-button").disabled = false;
  }
});

// -- characters -----------------------------------------------------------------------

const characters = { current: null, session: null, timer: null };

async function loadCharacters() {
  const list = await api("/v1/characters");
  const items = list.data.map((card) =>
    el("li", {}, el("button", { type: "button", onclick: () => openCharacter(card) }, card.name ?? card.id)));
  $("#character-list").replaceChildren(...items);
}

function openCharacter(card) {
  characters.current = card;
  characters.session = null;
  $("#character-editor").hidden = false;
  $("#editor-title").textContent = card.name ?? card.id;
  $("#card-text").value = JSON.stringify(card, null, 2);
  $("#card-errors").textContent = "";
  $("#character-log").replaceChildren();
  $("#card-text").focus();
}

async function importCard(file) {
  const type = file.name.endsWith(".png") ? "image/png"
    : /\.ya?ml$/.test(file.name) ? "application/yaml" : "application/json";
  try {
    const card = await api("/v1/characters/import", {
      method: "POST", body: await file.arrayBuffer(), headers: { "Content-Type": type },
    });
    await loadCharacters();
    openCharacter(card);
    say(`Imported ${card.name ?? card.id}.`);
  } catch (error) {
    say(`${file.name}: ${error.message}`);
  }
}

$("#card-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) importCard(file);
  event.target.value = "";
});
for (const name of ["dragenter", "dragover"]) {
  $("#drop").addEventListener(name, (event) => {
    event.preventDefault();
    $("#drop").classList.add("over");
  });
}
$("#drop").addEventListener("dragleave", () => $("#drop").classList.remove("over"));
$("#drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("#drop").classList.remove("over");
  const [file] = event.dataTransfer.files;
  if (file) importCard(file);
});
$("#drop").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") $("#card-file").click();
});

$("#card-text").addEventListener("input", () => {
  clearTimeout(characters.timer);
  characters.timer = setTimeout(checkCard, 300);
});

function cardFromEditor() {
  try {
    return [JSON.parse($("#card-text").value), null];
  } catch (error) {
    return [null, `Not JSON: ${error.message}`];
  }
}

async function checkCard() {
  const [card, problem] = cardFromEditor();
  if (problem) {
    $("#card-errors").textContent = problem;
    return false;
  }
  const result = await api("/v1/characters/validate", { method: "POST", json: card });
  $("#card-errors").textContent = result.errors.map((e) => `${e.loc}: ${e.msg}`).join("\n");
  return result.valid;
}

$("#card-save").addEventListener("click", async () => {
  if (!(await checkCard())) return;
  const [card] = cardFromEditor();
  try {
    const saved = await api("/v1/characters", { method: "POST", json: card });
    characters.current = saved;
    characters.session = null;
    await loadCharacters();
    say(`Saved ${saved.name ?? saved.id}.`);
  } catch (error) {
    say(error.message);
  }
});

$("#character-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const line = $("#character-input").value.trim();
  if (!line || !characters.current) return;
  $("#character-input").value = "";
  $("#character-log").append(el("li", { class: "user" }, line));
  const pending = el("li", { "aria-busy": "true" }, "…");
  $("#character-log").append(pending);
  try {
    if (!characters.session) {
      const session = await api("/v1/sessions", {
        method: "POST",
        json: { player_id: "console", player_name: "Tester", characters: [characters.current.id] },
      });
      characters.session = session.id;
    }
    const voice = $("#character-voice").checked;
    const turn = await api(`/v1/sessions/${encodeURIComponent(characters.session)}/messages`, {
      method: "POST", json: voice ? { text: line, voice: true, voice_format: "wav" } : { text: line },
    });
    pending.replaceChildren(...turnView(turn));
    if (turn.speech?.length) pending.append(player(turn.speech));
  } catch (error) {
    pending.replaceChildren(el("span", { class: "error" }, error.message));
  } finally {
    pending.removeAttribute("aria-busy");
  }
});

function player(segments) {
  // One <audio> per sentence (WAV, from the turn's base64), played one after the other.
  const audios = segments.map((segment) => {
    const raw = Uint8Array.from(atob(segment.audio), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([raw], { type: "audio/wav" }));
    return el("audio", { controls: "", src: url, title: segment.text, preload: "auto" });
  });
  audios.forEach((audio, i) => {
    if (audios[i + 1]) audio.addEventListener("ended", () => audios[i + 1].play().catch(() => {}));
  });
  audios[0]?.play().catch(() => {}); // a browser may refuse to play before a click
  return el("div", { class: "speech" }, ...audios);
}

function turnView(turn) {
  const change = Object.entries(turn.relationship ?? {})
    .filter(([, d]) => d.change)
    .map(([name, d]) => `${name} ${d.change > 0 ? "+" : ""}${d.change.toFixed(2)}`);
  const details = [
    `emotion: ${turn.emotion.label} (${turn.emotion.strength.toFixed(2)})`,
    turn.actions.length ? `actions: ${turn.actions.map((a) => `${a.name}(${JSON.stringify(a.parameters)})`).join(", ")}` : "",
    change.length ? `relationship: ${change.join(", ")}` : "",
    turn.lore.length ? `lore: ${turn.lore.join("; ")}` : "",
    turn.memories.length ? `memories: ${turn.memories.join("; ")}` : "",
  ].filter(Boolean);
  const out = [el("span", { class: "text" }, `${turn.name}: ${turn.text}`)];
  if (turn.narration) out.push(el("span", { class: "meta" }, turn.narration));
  out.push(el("span", { class: "meta turn-details" }, details.join(" · ")));
  return out;
}

// -- usage and keys -------------------------------------------------------------------

for (const id of ["#usage-by", "#usage-hours", "#usage-metric"]) {
  $(id).addEventListener("change", () => loadUsage().catch((error) => say(error.message)));
}

async function loadUsage() {
  const by = $("#usage-by").value;
  const hours = Number($("#usage-hours").value);
  const report = await api(`/v1/usage?by=${by}&hours=${hours}&buckets=48`);
  drawChart(report, $("#usage-metric").value);
  $("#usage-table tbody").replaceChildren(...report.summary.map((s) => el("tr", {},
    el("td", {}, s.group), el("td", {}, String(s.requests)), el("td", {}, String(s.failed + s.rejected)),
    el("td", {}, String(s.prompt_tokens)), el("td", {}, String(s.completion_tokens)),
    el("td", {}, s.avg_total_ms == null ? "" : `${Math.round(s.avg_total_ms)} ms`))));
  await Promise.all([loadKeys(), loadPrompts()]);
}

async function loadPrompts() {
  const list = await api("/v1/prompts");
  const rows = list.data.map((p) => el("tr", {}, el("td", {}, p.id), el("td", {}, `v${p.latest}`),
    el("td", {}, Object.entries(p.labels).map(([label, v]) => `${label} → v${v}`).join(", ")),
    el("td", {}, p.description ?? "")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4" }, "No prompt yet.")));
  $("#prompts-table tbody").replaceChildren(...rows);
}

function drawChart(report, metric) {
  const value = {
    requests: (p) => p.requests,
    tokens: (p) => p.prompt_tokens + p.completion_tokens,
    latency: (p) => p.avg_total_ms ?? 0,
  }[metric];
  const n = Math.round((Date.now() / 1000 - report.since) / report.bucket);
  const totals = new Array(Math.max(1, n)).fill(0);
  for (const point of report.series) {
    const i = Math.min(totals.length - 1, Math.round((point.start - report.since) / report.bucket));
    totals[i] = metric === "latency" ? Math.max(totals[i], value(point)) : totals[i] + value(point);
  }
  const max = Math.max(1, ...totals);
  const width = 600;
  const height = 160;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 16}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${metric} per ${Math.round(report.bucket / 60)} minutes, by ${report.by}`);
  const step = width / totals.length;
  totals.forEach((total, i) => {
    if (!total) return;
    const bar = document.createElementNS(ns, "rect");
    const h = Math.max(1, (total / max) * height);
    bar.setAttribute("class", "bar");
    bar.setAttribute("x", String(i * step + 1));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(Math.max(1, step - 2)));
    bar.setAttribute("height", String(h));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${Math.round(total)} ${metric}`;
    bar.append(title);
    svg.append(bar);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "0");
  label.setAttribute("y", String(height + 12));
  label.textContent = `max ${Math.round(max)}`;
  svg.append(label);
  $("#usage-chart").replaceChildren(svg);
  const count = report.summary.reduce((sum, s) => sum + s.requests, 0);
  $("#usage-caption").textContent = `${count} requests in ${report.summary.length} groups`;
}

async function loadKeys() {
  let list;
  try {
    list = await api("/v1/keys");
  } catch (error) {
    $("#keys-table tbody").replaceChildren(el("tr", {}, el("td", { colspan: "5" }, error.message)));
    return;
  }
  $("#keys-table tbody").replaceChildren(...list.data.map((key) => {
    const revoke = el("button", { type: "button" }, "Revoke");
    revoke.addEventListener("click", async () => {
      if (!confirm(`Revoke the key "${key.name}"? Clients using it are refused at once.`)) return;
      try {
        await api(`/v1/keys/${encodeURIComponent(key.name)}`, { method: "DELETE" });
        say(`Revoked ${key.name}.`);
        await loadKeys();
      } catch (error) {
        say(error.message);
      }
    });
    return el("tr", {}, el("td", {}, key.name), el("td", {}, `${key.prefix}…`),
      el("td", {}, key.admin ? "yes" : ""), el("td", {}, new Date(key.created_at * 1000).toLocaleString()),
      el("td", {}, revoke));
  }));
}

$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const created = await api("/v1/keys", {
      method: "POST", json: { name: $("#key-name").value.trim(), admin: $("#key-admin").checked },
    });
    $("#key-name").value = "";
    const shown = $("#key-created");
    shown.hidden = false;
    shown.textContent = `Key "${created.name}" (shown once, copy it now): ${created.key}`;
    await loadKeys();
  } catch (error) {
    say(error.message);
  }
});

route();
