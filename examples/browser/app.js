// The browser example: a LiveFlags engine fed by a host daemon; decisions re-render when the
// context changes or a new module version arrives (no reload). Query parameters `host`,
// `ruleset` and `context` (JSON) pre-fill the form.
import { LiveFlags } from "../../bindings/pkg/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$("host").value = params.get("host") ?? $("host").value;
$("ruleset").value = params.get("ruleset") ?? $("ruleset").value;
$("context").value = params.get("context") ??
  JSON.stringify({ market: "FR", tenant: "acme-fr", customer_id: "c-1001", order_total: 120.5 }, null, 2);

let live = null;
let previous = new Map();

function status(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function render() {
  if (!live?.engine) return;
  $("version").textContent = live.version ?? "(bootstrap)";
  $("hash").textContent = live.hash;
  let context;
  try {
    context = JSON.parse($("context").value || "{}");
    $("context-error").textContent = "";
  } catch (e) {
    $("context-error").textContent = `context is not JSON: ${e.message}`;
    return;
  }
  const now = new Date().toISOString();
  const rows = live.evaluateAll({ now, ...context }).map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.flag = r.key;
    const value = JSON.stringify(r.value, (_, v) => (typeof v === "bigint" ? v.toString() : v));
    if (previous.has(r.key) && previous.get(r.key) !== value) tr.className = "changed";
    previous.set(r.key, value);
    for (const text of [r.key, r.variant ?? "–", value, r.errorCode ? `${r.reason} ${r.errorCode}` : r.reason]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $("decisions").replaceChildren(...rows);
}

async function connect() {
  live?.close();
  status("connecting…", "loading");
  try {
    live = await LiveFlags.connect({
      baseUrl: $("host").value,
      ruleset: $("ruleset").value,
      onUpdate: ({ version }) => {
        status(`live: serving version ${version ?? "?"}`, "live");
        render();
      },
      onError: (e) => status(`keeping the last good module: ${e.message ?? e}`, "error"),
    });
    if (!live.engine) status("no module yet", "error");
    render();
  } catch (e) {
    status(`cannot connect: ${e.message ?? e}`, "error");
  }
}

$("context").addEventListener("input", render);
$("connect").addEventListener("click", connect);
window.flagforgeExample = { get live() { return live; } };
connect();
