/**
 * The disengage console: one page for marketing ops, fed by `/api/snapshot`
 * (polled every second) of the console server (stream/console/). Charts are
 * Chart.js; the rest is plain DOM, built with `textContent` only (alert
 * texts never become markup).
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
} from "chart.js";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  ScatterController,
  Tooltip,
);
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.font.size = 11;

interface LiveAlert {
  seq: number;
  id: string;
  kind: string;
  severity: string;
  time: string;
  page: string | null;
  page_type: string | null;
  stage: string | null;
  action: string;
  reasons: string[];
  treatment: string | null;
  session: string | null;
}
interface TrustRow {
  dimension: "stage" | "page_type" | "signal";
  name: string;
  occurrences: number;
  trust_change: number | null;
  scored_steps: number;
  sessions_hit: number;
  conversion_hit: number | null;
  conversion_not_hit: number | null;
}
interface AucPoint {
  time: string | null;
  sessions: number;
  trust_auc: number | null;
  activity_auc: number | null;
}
interface CalibrationBin {
  bin: [number, number];
  sessions: number;
  predicted: number | null;
  observed: number | null;
}
interface Arm {
  sessions: number;
  converted: number;
}
interface UpliftRow {
  dimension: string;
  value: string;
  treated: Arm;
  control: Arm;
  difference: number | null;
  lower: number | null;
  upper: number | null;
  min_sessions: number;
}
interface Hotspot {
  key: string;
  page: string;
  step: string | null;
  began: string;
  last: string;
  rate_now: number | null;
  rate_before: number | null;
  /** null: not known (a deployment's alerts do not carry an incident's end) */
  open: boolean | null;
}
interface Snapshot {
  sim_time: string | null;
  sessions_closed: number;
  sessions_converted: number;
  live: LiveAlert[];
  alert_seq: number;
  at_risk: LiveAlert[];
  trust_map: TrustRow[];
  validation: {
    window_sessions: number;
    outcomes: { converted: number; not_converted: number };
    trust_auc: number | null;
    activity_auc: number | null;
    over_time: AucPoint[];
    calibration: CalibrationBin[];
    min_bin: number;
  };
  uplift: UpliftRow[];
  hotspots: Hotspot[];
  source: string;
}

const WIN = "#1f8a4c";
const LOSE = "#c8372d";
const INK = "#1d2330";
const MUTED = "#8a93a3";

function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

function el(tag: string, text?: string, cls?: string): HTMLElement {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function pct(value: number | null): string {
  return value === null ? "n/a" : `${(100 * value).toFixed(1)}%`;
}

function signed(value: number | null, digits = 3): string {
  return value === null ? "n/a" : `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
}

function clock(time: string | null): string {
  return time ? time.slice(11, 19) : "";
}

function words(name: string): string {
  return name.replace(/_/g, " ");
}

// ------------------------------------------------------------------ live
const filters = {
  kind: byId<HTMLSelectElement>("f-kind"),
  page: byId<HTMLSelectElement>("f-page"),
  severity: byId<HTMLSelectElement>("f-severity"),
};
const pageTypes = new Set<string>();
let latest: Snapshot | null = null;
for (const select of Object.values(filters)) {
  select.addEventListener("change", () => {
    if (latest) renderLive(latest);
  });
}

function alertItem(a: LiveAlert): HTMLElement {
  const item = el("li", undefined, `alert ${a.kind}`);
  const head = el("div", undefined, "head");
  head.append(el("span", words(a.kind), "kind"), el("span", a.severity, `badge ${a.severity}`));
  if (a.treatment === "control") head.append(el("span", "control (holdout)", "badge control"));
  head.append(el("span", clock(a.time)));
  const where = [a.page_type, a.stage, a.page].filter((x): x is string => !!x).join(" · ");
  if (where) head.append(el("span", where));
  item.append(head, el("div", a.action, "action"));
  const reasons = el("ul");
  for (const reason of a.reasons) reasons.append(el("li", reason));
  item.append(reasons);
  return item;
}

function renderLive(s: Snapshot): void {
  for (const a of s.live) if (a.page_type) pageTypes.add(a.page_type);
  const known = new Set(Array.from(filters.page.options).map((o) => o.value));
  for (const type of Array.from(pageTypes).sort()) {
    if (!known.has(type)) filters.page.append(new Option(type, type));
  }
  const shown = s.live.filter(
    (a) =>
      (!filters.kind.value || a.kind === filters.kind.value) &&
      (!filters.page.value || a.page_type === filters.page.value) &&
      (!filters.severity.value || a.severity === filters.severity.value),
  );
  const list = byId("alerts");
  list.replaceChildren(...shown.map(alertItem));
  if (!shown.length) list.append(el("li", s.live.length ? "no alert matches the filters" : "no alert yet", "na"));
  const risk = byId("at-risk");
  const treated = s.at_risk.filter((a) => a.treatment !== "control").length;
  risk.replaceChildren(
    el("b", String(s.at_risk.length)),
    document.createTextNode(` sessions at risk now (alerted, still open; ${treated} treated)`),
  );
}

// ------------------------------------------------------------- trust map
let dimension: TrustRow["dimension"] = "page_type";
for (const button of Array.from(document.querySelectorAll<HTMLButtonElement>(".tabs button"))) {
  button.addEventListener("click", () => {
    dimension = (button.dataset.dim ?? "page_type") as TrustRow["dimension"];
    for (const b of Array.from(document.querySelectorAll(".tabs button"))) b.classList.toggle("on", b === button);
    if (latest) renderTrust(latest);
  });
}

const trustChart = new Chart<"bar", number[], string>(byId<HTMLCanvasElement>("trust-chart"), {
  type: "bar",
  data: { labels: [], datasets: [{ label: "average trust change per scored step", data: [], backgroundColor: [] }] },
  options: {
    indexAxis: "y",
    plugins: { legend: { display: false } },
    scales: {
      x: { title: { display: true, text: "change of P(convert)" } },
      y: { ticks: { autoSkip: false } },
    },
  },
});

function renderTrust(s: Snapshot): void {
  const rows = s.trust_map.filter((r) => r.dimension === dimension);
  const pages = s.trust_map
    .filter((r) => r.dimension === "page_type" && r.trust_change !== null)
    .sort((a, b) => (a.trust_change ?? 0) - (b.trust_change ?? 0));
  const dataset = trustChart.data.datasets[0];
  if (dataset) {
    trustChart.data.labels = pages.map((r) => r.name);
    dataset.data = pages.map((r) => r.trust_change ?? 0);
    dataset.backgroundColor = pages.map((r) => ((r.trust_change ?? 0) >= 0 ? WIN : LOSE));
  }
  trustChart.update();
  const body = byId("trust-table").querySelector("tbody");
  if (!body) return;
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = el("tr");
      const change = el("td", signed(r.trust_change), "num");
      if (r.trust_change !== null) change.classList.add(r.trust_change >= 0 ? "win" : "lose");
      tr.append(
        el("td", words(r.name)),
        el("td", r.occurrences.toLocaleString(), "num"),
        change,
        el("td", `${pct(r.conversion_hit)} (${r.sessions_hit.toLocaleString()})`, "num"),
        el("td", pct(r.conversion_not_hit), "num"),
      );
      return tr;
    }),
  );
}

// ------------------------------------------------------------ validation
const aucChart = new Chart<"line", (number | null)[], string>(byId<HTMLCanvasElement>("auc-chart"), {
  type: "line",
  data: {
    labels: [],
    datasets: [
      { label: "trust score", data: [], borderColor: INK, backgroundColor: INK, spanGaps: false },
      { label: "best activity metric", data: [], borderColor: MUTED, backgroundColor: MUTED, borderDash: [4, 3] },
    ],
  },
  options: {
    scales: { y: { min: 0.4, max: 1, title: { display: true, text: "prefix AUC" } } },
    plugins: { legend: { position: "bottom" } },
  },
});

const calibrationChart = new Chart(byId<HTMLCanvasElement>("calibration-chart"), {
  type: "scatter",
  data: {
    datasets: [
      { label: "observed", data: [], borderColor: INK, backgroundColor: INK, showLine: true },
      { label: "perfect", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: MUTED, borderDash: [4, 3], showLine: true, pointRadius: 0 },
    ],
  },
  options: {
    scales: {
      x: { min: 0, max: 1, title: { display: true, text: "predicted P(convert)" } },
      y: { min: 0, max: 1, title: { display: true, text: "observed conversion" } },
    },
    plugins: { legend: { position: "bottom" } },
  },
});

function renderValidation(s: Snapshot): void {
  const v = s.validation;
  const figures = byId("validation-figures");
  const auc = (x: number | null): string => (x === null ? "n/a" : x.toFixed(3));
  const behind = `${v.window_sessions.toLocaleString()} sessions (${v.outcomes.converted.toLocaleString()} converted)`;
  const trust = el("span");
  trust.append(document.createTextNode("trust "), el("b", auc(v.trust_auc)));
  const activity = el("span");
  activity.append(document.createTextNode("activity "), el("b", auc(v.activity_auc)));
  const note = v.trust_auc === null ? "n/a: too few outcomes of each kind yet" : `over ${behind}`;
  figures.replaceChildren(trust, activity, el("span", note, "na"));
  aucChart.data.labels = v.over_time.map((p) => clock(p.time));
  const [t, a] = aucChart.data.datasets;
  if (t && a) {
    t.data = v.over_time.map((p) => p.trust_auc);
    a.data = v.over_time.map((p) => p.activity_auc);
  }
  aucChart.update();
  const observed = calibrationChart.data.datasets[0];
  if (observed) {
    observed.data = v.calibration
      .filter((b) => b.predicted !== null && b.observed !== null)
      .map((b) => ({ x: b.predicted ?? 0, y: b.observed ?? 0 }));
  }
  calibrationChart.update();
}

// --------------------------------------------------------------- uplift
const upliftChart = new Chart<"bar", [number, number][], string>(byId<HTMLCanvasElement>("uplift-chart"), {
  type: "bar",
  data: { labels: [], datasets: [{ label: "95% interval of the uplift", data: [], backgroundColor: [] }] },
  options: {
    indexAxis: "y",
    plugins: { legend: { display: false } },
    scales: {
      x: { title: { display: true, text: "treated - control conversion" } },
      y: { ticks: { autoSkip: false } },
    },
  },
});


function upliftRow(r: UpliftRow): HTMLElement {
  const tr = el("tr");
  const figure =
    r.difference === null
      ? `n/a (needs ${r.min_sessions} per group)`
      : `${signed(r.difference)} [${signed(r.lower)}, ${signed(r.upper)}]`;
  const cell = el("td", figure, "num");
  if (r.lower !== null && r.lower > 0) cell.classList.add("win");
  if (r.upper !== null && r.upper < 0) cell.classList.add("lose");
  if (r.difference === null) cell.classList.add("na");
  tr.append(
    el("td", r.dimension === "all" ? "all alerts" : words(r.value)),
    el("td", `${r.treated.converted}/${r.treated.sessions}`, "num"),
    el("td", `${r.control.converted}/${r.control.sessions}`, "num"),
    cell,
  );
  return tr;
}

function renderUplift(s: Snapshot): void {
  const main = s.uplift
    .filter((r) => r.dimension !== "action")
    .sort((a, b) => (a.dimension === "all" ? -1 : b.dimension === "all" ? 1 : a.value.localeCompare(b.value)));
  const actions = s.uplift.filter((r) => r.dimension === "action");
  const shown = s.uplift.filter((r) => r.lower !== null && r.upper !== null);
  const dataset = upliftChart.data.datasets[0];
  if (dataset) {
    upliftChart.data.labels = shown.map((r) =>
      r.dimension === "all" ? "all alerts" : words(r.value).slice(0, 32),
    );
    dataset.data = shown.map((r): [number, number] => [r.lower ?? 0, r.upper ?? 0]);
    dataset.backgroundColor = shown.map((r) => ((r.lower ?? 0) > 0 ? WIN : (r.upper ?? 0) < 0 ? LOSE : MUTED));
  }
  upliftChart.update();
  const note = byId("uplift-note");
  note.hidden = shown.length > 0;
  const body = byId("uplift-table").querySelector("tbody");
  if (body) {
    body.replaceChildren(...main.map(upliftRow));
    if (!main.length) body.append(el("tr", "no alerted session has closed yet", "na"));
  }
  const byAction = byId("uplift-actions").querySelector("tbody");
  if (byAction) byAction.replaceChildren(...actions.map(upliftRow));
}

// -------------------------------------------------------------- hotspots
function renderHotspots(s: Snapshot): void {
  const body = byId("hotspot-table").querySelector("tbody");
  if (!body) return;
  const rows = [...s.hotspots].sort((a, b) => Number(b.open) - Number(a.open) || b.began.localeCompare(a.began));
  body.replaceChildren(
    ...rows.map((h) => {
      const tr = el("tr");
      tr.append(
        el("td", h.page),
        el("td", h.step ?? "-"),
        el("td", h.began.slice(0, 19).replace("T", " ")),
        el("td", `${pct(h.rate_before)} → ${pct(h.rate_now)}`, "num"),
        h.open === null
          ? el("td", `last alert ${h.last.slice(11, 19)}`, "na")
          : el("td", h.open ? "open" : "closed", h.open ? "lose" : "na"),
      );
      return tr;
    }),
  );
  if (!rows.length) body.append(el("tr", "no incident", "na"));
}

// ----------------------------------------------------------------- loop
async function refresh(): Promise<void> {
  const status = byId("status");
  try {
    const resp = await fetch("api/snapshot", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const s = (await resp.json()) as Snapshot;
    latest = s;
    renderLive(s);
    renderTrust(s);
    renderValidation(s);
    renderUplift(s);
    renderHotspots(s);
    const when = s.sim_time ? s.sim_time.slice(0, 19).replace("T", " ") : "waiting for events";
    status.textContent = `${s.source} · ${when} · ${s.sessions_closed.toLocaleString()} sessions closed, ${s.sessions_converted.toLocaleString()} converted · ${s.alert_seq.toLocaleString()} alerts`;
  } catch (exc) {
    status.textContent = `no data from the console server (${String(exc)}); retrying`;
  }
}

void refresh();
setInterval(() => void refresh(), 1000);
