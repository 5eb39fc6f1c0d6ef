// The local runtime's web UI (docs/local.md, "The web UI"). Reads GET /_local/status and
// /_local/ui/api/{overview,archive,trace/<id>} and renders them with DOM nodes: every value goes in as
// text (Node.append / textContent), never as HTML. No dependencies, no build step.

const API = "/_local/ui/api";
const REFRESH_MS = 3000;
const PRINTABLE = /^[\x20-\x7e]{1,200}$/; // escore.correlation's rule for an X-Correlation-Id

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes; null/false are skipped). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map(([label, cls]) => el("th", { class: cls }, label)))),
    el("tbody", {}, rows));
}

async function getJSON(url) {
  const answer = await fetch(url, { headers: { accept: "application/json" }, cache: "no-store" });
  const body = await answer.json().catch(() => null);
  if (!answer.ok) throw new Error((body && body.message) || `${url} answered ${answer.status}`);
  return body;
}

const num = (value) => (value === null || value === undefined ? "?" : Number(value).toLocaleString("en"));

function bytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

/** "2026-12-01T21:17:30.123456Z" -> "21:17:30.123" (the full text goes in the title). */
function clock(text) {
  const match = /T(\d\d:\d\d:\d\d(?:\.\d{1,3})?)/.exec(text || "");
  return match ? match[1] : text || "";
}

const millis = (text) => Date.parse(text);

/** The correlation id in the address (#trace=<id>), or null. */
function hashTrace() {
  if (!location.hash.startsWith("#trace=")) return null;
  try {
    return decodeURIComponent(location.hash.slice(7));
  } catch {
    return null; // a malformed escape: ignored
  }
}

// -- the runtime line and the mappings (GET /_local/status) ---------------------------------------
function renderStatus(status) {
  $("stage").textContent = status.stage;
  const emulation = status.emulation || {};
  const workers = status.api_workers || {};
  const faults = status.faults || {};
  const active = ["duplicates", "crash", "poller_kill", "kinesis_throttle", "archive_put_failure"]
    .filter((name) => Number(faults[name]) > 0).map((name) => `${name} ${faults[name]}`);
  $("runtime").replaceChildren(
    el("span", { class: emulation.running ? "dot ok" : "dot bad" }),
    emulation.running ? `emulation running (pid ${emulation.pid})` : `emulation stopped (exit ${emulation.exit_code})`,
    ` · API ${status.api_url} · ${workers.count || 0} API workers · `,
    active.length ? el("span", { class: "bad" }, `faults: ${active.join(", ")}`) : "no faults",
  );

  const mappings = status.mappings || [];
  $("mappings").replaceChildren(table(
    [["mapping"], ["source"], ["function"], ["pending", "num"], ["DLQ", "num"], ["batches", "num"],
      ["records done", "num"], ["function errors", "num"]],
    mappings.map((m) => el("tr", { "data-mapping": m.name },
      el("td", { class: "mono" }, m.name),
      el("td", { class: "mono" }, m.source),
      el("td", { class: "mono" }, m.function),
      el("td", { class: m.pending > 0 ? "num warn" : "num", "data-field": "pending" }, num(m.pending)),
      el("td", { class: m.dlq > 0 ? "num bad" : "num", "data-field": "dlq" }, num(m.dlq)),
      el("td", { class: "num" }, num(m.batches)),
      el("td", { class: "num" }, num(m.records_done)),
      el("td", { class: m.function_errors > 0 ? "num warn" : "num" }, num(m.function_errors)))),
    { id: "mappings-table" }));

  $("firehose").replaceChildren(table(
    [["delivery stream"], ["source"], ["pending", "num"], ["objects", "num"], ["records delivered", "num"],
      ["error records", "num"]],
    (status.firehose || []).map((f) => el("tr", {},
      el("td", { class: "mono" }, f.delivery_stream),
      el("td", { class: "mono" }, f.source),
      el("td", { class: f.pending > 0 ? "num warn" : "num" }, num(f.pending)),
      el("td", { class: "num" }, num(f.objects)),
      el("td", { class: "num" }, num(f.records_delivered)),
      el("td", { class: f.error_records > 0 ? "num bad" : "num" }, num(f.error_records))))));
}

// -- the services (GET /_local/ui/api/overview) ---------------------------------------------------
function correlationButton(id) {
  if (!id) return el("span", { class: "muted" }, "none");
  return el("button", { type: "button", class: "cid", title: `trace ${id}`, "data-cid": id,
    onclick: () => showTrace(id, true) }, id);
}

function renderOverview(overview) {
  $("services").replaceChildren(...overview.services.map((service) => el("article",
    { class: "card", "data-service": service.name },
    el("h3", {}, service.name,
      el("span", { class: "badge" }, `${num(service.events)} event${service.events === 1 ? "" : "s"}`
        + (service.truncated ? "+" : ""))),
    el("dl", {},
      el("dt", {}, "event store"), el("dd", { class: "mono" }, service.event_store),
      el("dt", {}, "stream"), el("dd", { class: "mono" }, service.stream || "none"),
      el("dt", {}, "projections"), el("dd", {}, service.projections.length
        ? service.projections.map((p, i) => [i ? ", " : "", el("span", { class: "mono" }, p.name),
          el("span", { class: "muted" }, ` (from ${p.sources.join(", ")})`)])
        : el("span", { class: "muted" }, "none"))),
    service.latest.length
      ? el("div", { class: "events-box scroll" }, table([["occurred"], ["type"], ["stream", "wide"], ["v", "num"], ["correlation id"]],
        service.latest.map((e) => el("tr", { "data-event": e.event_id },
          el("td", { class: "mono", title: e.occurred_at }, clock(e.occurred_at)),
          el("td", {}, e.type),
          el("td", { class: "mono clip", title: e.stream_id }, e.stream_id),
          el("td", { class: "num" }, e.version),
          el("td", {}, correlationButton(e.correlation_id)))),
        { class: "events" }))
      : el("p", { class: "events-box muted" }, "no events yet"))));
}

// -- the archive (GET /_local/ui/api/archive) -------------------------------------------------------
function renderArchive(archive) {
  const summary = el("p", { class: "summary" },
    el("strong", {}, `${num(archive.count)} object${archive.count === 1 ? "" : "s"}`),
    `, ${bytes(archive.bytes)} in `, el("span", { class: "mono" }, archive.bucket),
    archive.truncated ? ` (the newest ${archive.objects.length} shown)` : "");
  if (!archive.objects.length) {
    $("archive").replaceChildren(summary, el("p", { class: "muted" }, "nothing delivered yet"));
    return;
  }
  $("archive").replaceChildren(summary, table(
    [["key", "wide"], ["service"], ["hour (delivery)"], ["size", "num"], ["last modified"]],
    archive.objects.map((o) => el("tr", { "data-key": o.key, class: o.kind === "errors" ? "error-row" : null },
      el("td", { class: "mono key" }, o.key),
      el("td", {}, o.service || o.kind),
      el("td", { class: "mono nowrap" }, o.hour || ""),
      el("td", { class: "num" }, bytes(o.size)),
      el("td", { class: "mono", title: o.last_modified }, clock(o.last_modified)))),
    { id: "archive-table" }));
}

// -- a trace (GET /_local/ui/api/trace/<id>) --------------------------------------------------------
function renderTrace(found) {
  const entries = found.entries;
  if (!entries.length) {
    return el("p", { class: "muted", id: "trace-empty" },
      "No event carries the correlation id ", el("code", {}, found.correlation_id), " (yet).");
  }
  const lanes = [...new Set(entries.map((e) => e.service))];
  const start = millis(entries[0].occurred_at);
  const stats = found.stats || {};
  const head = el("p", { class: "summary" },
    el("strong", {}, `${entries.length} event${entries.length === 1 ? "" : "s"}`),
    ` across ${lanes.length} service${lanes.length === 1 ? "" : "s"} for `, el("code", {}, found.correlation_id),
    el("span", { class: "muted" }, found.archive_searched ? " · from the archive and the event stores"
      : " · from the event stores", stats.seconds !== undefined ? `, read in ${stats.seconds} s` : ""));
  const timeline = el("ol", { class: "timeline", id: "timeline" },
    el("li", { class: "row lanes-head", "aria-hidden": "true" }, el("span", {}, "after"),
      lanes.map((lane) => el("span", { class: "lane-name" }, lane))),
    entries.map((e, index) => {
      const offset = millis(e.occurred_at) - start;
      const lane = lanes.indexOf(e.service);
      const card = el("div", { class: `step depth-${Math.min(e.depth, 4)} lane-${lane % 6}` },
        el("div", { class: "step-title" }, el("span", { class: "step-index" }, `${index + 1}`), e.type),
        el("div", { class: "mono clip", title: e.stream_id }, `${e.stream_id} v${e.version}`),
        el("div", { class: "meta" },
          el("span", { class: `badge src-${e.source}` }, e.source),
          e.archived_at ? ` archived ${clock(e.archived_at)}` : found.archive_searched ? " not archived yet" : "",
          e.depth ? ` · caused by ${e.causation_id}` : ""),
        el("code", { class: "data clip", title: JSON.stringify(e.data) }, JSON.stringify(e.data)));
      return el("li", { class: "row", "data-service": e.service, "data-type": e.type, "data-event": e.event_id },
        el("span", { class: "offset mono", title: e.occurred_at }, Number.isFinite(offset) ? `+${offset} ms` : ""),
        lanes.map((_, index) => el("div", { class: "lane" }, index === lane ? card : null)));
    }));
  timeline.style.setProperty("--lanes", String(lanes.length));
  return el("div", {}, head, timeline);
}

let currentTrace = null;

async function showTrace(id, scroll = false) {
  const input = $("trace-input");
  input.value = id;
  const target = $("trace");
  if (!PRINTABLE.test(id) || id.trim() !== id) {
    target.replaceChildren(el("p", { class: "error" },
      "A correlation id is printable ASCII of 1 to 200 characters, with no leading or trailing space."));
    return;
  }
  currentTrace = id;
  if (hashTrace() !== id) history.replaceState(null, "", `#trace=${encodeURIComponent(id)}`);
  target.replaceChildren(el("p", { class: "muted" }, "tracing…"));
  if (scroll) $("trace-section").scrollIntoView({ behavior: "smooth", block: "start" });
  try {
    const found = await getJSON(`${API}/trace/${encodeURIComponent(id)}`);
    if (currentTrace === id) target.replaceChildren(renderTrace(found));
  } catch (error) {
    if (currentTrace === id) target.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

// -- refreshing -------------------------------------------------------------------------------------
let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const renders = [renderStatus, renderOverview, renderArchive];
    const answers = await Promise.allSettled(
      ["/_local/status", `${API}/overview`, `${API}/archive`].map((url) => getJSON(url)));
    const problems = [];
    answers.forEach((answer, index) => {
      if (answer.status === "fulfilled") renders[index](answer.value);
      else problems.push(answer.reason.message);
    });
    const banner = $("error");
    banner.textContent = problems.join(" · ");
    banner.hidden = problems.length === 0;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  } finally {
    refreshing = false;
  }
}

function start() {
  $("refresh").addEventListener("click", () => {
    refresh();
    if (currentTrace) showTrace(currentTrace);
  });
  $("trace-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showTrace($("trace-input").value.trim());
  });
  setInterval(() => { if ($("auto").checked) refresh(); }, REFRESH_MS);
  refresh();
  const linked = hashTrace();
  if (linked) showTrace(linked);
}

start();
