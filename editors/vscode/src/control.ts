// Mission Control as HTML for a webview, without VS Code: a pure function of the status
// snapshot, so it is unit-tested. The page loads nothing remote: its Content-Security-Policy
// allows only styles and the one script carrying this render's nonce, and every value from the
// snapshot is escaped.

import { BudgetPoint, History, TimelineEntry } from "./history";
import { Snapshot, waitingMilestone } from "./missions";

export interface Assertion {
  id: string;
  milestone: string;
  description: string;
  status: string;
}

export type ControlSnapshot = Snapshot & {
  contract?: { assertions: Assertion[] };
  active_run?: { role: string; milestone?: string | null; feature?: string | null; model?: string | null; tool?: string | null } | null;
};

/** Escapes text for HTML content and attribute values. */
export function escape(text: unknown): string {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);
}

/** The roles in the order the chart's legend lists them, with their theme colours. */
const ROLE_COLOURS: [string, string][] = [
  ["orchestrator", "--vscode-charts-blue"],
  ["worker", "--vscode-charts-orange"],
  ["reviewer", "--vscode-charts-green"],
  ["user_tester", "--vscode-charts-purple"],
  ["test_author", "--vscode-charts-red"],
];

/** The tokens burned by each role over time: one cumulative step line per role, as inline SVG
 * (nothing loaded), with a legend that also says the totals in words. */
export function budgetChart(points: BudgetPoint[]): string {
  if (points.length === 0) {
    return "<p>No model calls yet.</p>";
  }
  const width = 480;
  const height = 140;
  const times = points.map((p) => Date.parse(p.ts));
  const start = times[0];
  const span = Math.max(times[times.length - 1] - start, 1);
  const last = points[points.length - 1].byRole;
  const top = Math.max(...Object.values(last), 1);
  const known = new Map(ROLE_COLOURS);
  const roles = [...ROLE_COLOURS.map(([role]) => role).filter((r) => r in last), ...Object.keys(last).filter((r) => !known.has(r)).sort()];
  const x = (i: number) => (Number.isFinite(times[i]) ? ((times[i] - start) / span) * width : (i / Math.max(points.length - 1, 1)) * width).toFixed(1);
  const y = (tokens: number) => (height - (tokens / top) * height).toFixed(1);
  const lines = roles.map((role) => {
    let previous = 0;
    const steps: string[] = [`0,${height}`];
    points.forEach((point, i) => {
      const tokens = point.byRole[role] ?? 0;
      steps.push(`${x(i)},${y(previous)}`, `${x(i)},${y(tokens)}`);
      previous = tokens;
    });
    steps.push(`${width},${y(previous)}`);
    const colour = known.get(role) ?? "--vscode-charts-yellow";
    return `<polyline class="role" data-role="${escape(role)}" fill="none" stroke-width="2" vector-effect="non-scaling-stroke" style="stroke:var(${colour})" points="${steps.join(" ")}"/>`;
  });
  const legend = roles
    .map((role) => {
      const colour = known.get(role) ?? "--vscode-charts-yellow";
      return `<li><span class="swatch" style="background:var(${colour})"></span>${escape(role.replace(/_/g, " "))}: ${escape(last[role].toLocaleString("en-US"))} tokens</li>`;
    })
    .join("");
  return (
    // The chart stretches to the view's width; its strokes keep their width however it scales.
    `<svg class="chart" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img" aria-label="tokens by role over time">` +
    `<line x1="0" y1="${height}" x2="${width}" y2="${height}" stroke-width="1" vector-effect="non-scaling-stroke" style="stroke:var(--vscode-foreground)"/>` +
    lines.join("") +
    `</svg><ul class="legend">${legend}</ul>`
  );
}

/** A timestamp as the timeline shows it: the local time of day. */
function clock(ts: string): string {
  const time = new Date(ts);
  return Number.isNaN(time.getTime()) ? ts : time.toLocaleTimeString("en-GB", { hour12: false });
}

function entries(list: TimelineEntry[], newestFirst: boolean, limit: number): string {
  const shown = newestFirst ? list.slice(-limit).reverse() : list.slice(-limit);
  return shown.map((e) => `<li><time>${escape(clock(e.ts))}</time> ${escape(e.text)}</li>`).join("");
}

/** The page for `snapshot`; `cspSource` is the webview's own source, `nonce` this render's;
 * `history` is what the mission's log says of its past. */
export function renderControl(snapshot: ControlSnapshot, cspSource: string, nonce: string, history?: History): string {
  const state = snapshot.interrupted ? "interrupted" : snapshot.state.replace(/_/g, " ");
  const budget = snapshot.budget;
  const run = snapshot.active_run;
  const milestones = (snapshot.plan?.milestones ?? [])
    .map(
      (m) =>
        `<li><b>${escape(m.id)}</b> ${escape(m.title)} <span class="status">${escape(m.status)}</span><ul>` +
        m.features.map((f) => `<li>${escape(f.id)} ${escape(f.title)} <span class="status">${escape(f.status)}</span></li>`).join("") +
        "</ul></li>",
    )
    .join("");
  const assertions = (snapshot.contract?.assertions ?? [])
    .map((a) => `<li><b>${escape(a.id)}</b> <span class="status ${escape(a.status)}">${escape(a.status)}</span> ${escape(a.description)}</li>`)
    .join("");
  const findings = snapshot.findings
    .map((f) => {
      const place = f.path ? `${f.path}${f.line ? `:${f.line}` : ""}` : "";
      const jump = f.path ? ` data-path="${escape(f.path)}" data-line="${escape(f.line ?? 1)}"` : "";
      return `<li class="finding"${jump}><b>${escape(f.id)}</b> ${escape(f.severity)} ${escape(f.validator)} ${escape(place)}: ${escape(f.message.split("\n")[0])}</li>`;
    })
    .join("");
  const gates: string[] = [];
  if (snapshot.state === "awaiting_approval") {
    gates.push(`<button data-gate="approvePlan">Approve plan</button>`);
  }
  const waiting = waitingMilestone(snapshot);
  if (waiting) {
    gates.push(`<button data-gate="acceptMilestone">Accept ${escape(waiting.id)}</button>`);
    gates.push(`<button data-gate="rejectMilestone">Reject ${escape(waiting.id)}…</button>`);
  }
  if (snapshot.state === "paused" || snapshot.interrupted) {
    gates.push(`<button data-gate="resume">Resume</button>`);
  }
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${cspSource} 'unsafe-inline'; script-src 'nonce-${nonce}';">
<title>Mission ${escape(snapshot.id)}</title>
<style>body{font-family:var(--vscode-font-family);} .status{opacity:.75} .finding[data-path]{cursor:pointer;text-decoration:underline dotted}
.chart{width:100%;max-width:40em;height:9em;display:block} .legend{list-style:none;padding:0;display:flex;gap:1em;flex-wrap:wrap} .swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
.timeline{list-style:none;padding:0;max-height:20em;overflow:auto} time{opacity:.7;font-variant-numeric:tabular-nums}</style>
</head><body>
<h1>${escape(snapshot.title)}</h1>
<p>Mission <code>${escape(snapshot.id)}</code> · <b>${escape(state)}</b>${snapshot.detail ? ` — ${escape(snapshot.detail)}` : ""}</p>
<p>Budget: ${escape((budget?.used_tokens ?? 0).toLocaleString("en-US"))} tokens${budget?.max_tokens ? ` of ${escape(budget.max_tokens.toLocaleString("en-US"))}` : ""}, $${escape((budget?.used_usd ?? 0).toFixed(2))}</p>
<p class="run">${run ? `Running: ${escape(run.role.replace(/_/g, " "))} ${escape(run.feature ?? run.milestone ?? "")}${run.model ? ` on <code>${escape(run.model)}</code>` : ""}${run.tool ? ` — <code>${escape(run.tool)}</code>` : ""}` : "Nothing running."}</p>
<div class="gates">${gates.join(" ")}</div>
<h2>Budget by role</h2>${budgetChart(history?.budget ?? [])}
<h2>Milestones</h2><ul>${milestones || "<li>no plan yet</li>"}</ul>
<h2>Assertions</h2><ul>${assertions || "<li>none yet</li>"}</ul>
<h2>Open findings (${snapshot.findings.length})</h2><ul>${findings || "<li>none</li>"}</ul>
<h2>Course corrections (${history?.corrections.length ?? 0})</h2><ul class="corrections">${entries(history?.corrections ?? [], false, 50) || "<li>none sent</li>"}</ul>
<h2>Timeline</h2><ol class="timeline">${entries(history?.timeline ?? [], true, 200) || "<li>nothing yet</li>"}</ol>
<script nonce="${nonce}">
const vscode = acquireVsCodeApi();
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-gate], [data-path]");
  if (!target) return;
  if (target.dataset.gate) vscode.postMessage({ gate: target.dataset.gate });
  else vscode.postMessage({ path: target.dataset.path, line: Number(target.dataset.line) });
});
</script>
</body></html>`;
}
