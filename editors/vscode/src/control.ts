// Mission Control as HTML for a webview, without VS Code: a pure function of the status
// snapshot, so it is unit-tested. The page loads nothing remote: its Content-Security-Policy
// allows only styles and the one script carrying this render's nonce, and every value from the
// snapshot is escaped.

import { Snapshot, waitingMilestone } from "./missions";

export interface Assertion {
  id: string;
  milestone: string;
  description: string;
  status: string;
}

export type ControlSnapshot = Snapshot & {
  contract?: { assertions: Assertion[] };
  active_run?: { role: string; milestone?: string | null; feature?: string | null } | null;
};

/** Escapes text for HTML content and attribute values. */
export function escape(text: unknown): string {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);
}

/** The page for `snapshot`; `cspSource` is the webview's own source, `nonce` this render's. */
export function renderControl(snapshot: ControlSnapshot, cspSource: string, nonce: string): string {
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
<style>body{font-family:var(--vscode-font-family);} .status{opacity:.75} .finding[data-path]{cursor:pointer;text-decoration:underline dotted}</style>
</head><body>
<h1>${escape(snapshot.title)}</h1>
<p>Mission <code>${escape(snapshot.id)}</code> · <b>${escape(state)}</b>${snapshot.detail ? ` — ${escape(snapshot.detail)}` : ""}</p>
<p>Budget: ${escape(budget?.used_tokens ?? 0)} tokens, $${escape((budget?.used_usd ?? 0).toFixed(2))}${run ? ` · running: ${escape(run.role)} ${escape(run.feature ?? run.milestone ?? "")}` : ""}</p>
<div class="gates">${gates.join(" ")}</div>
<h2>Milestones</h2><ul>${milestones || "<li>no plan yet</li>"}</ul>
<h2>Assertions</h2><ul>${assertions || "<li>none yet</li>"}</ul>
<h2>Open findings (${snapshot.findings.length})</h2><ul>${findings || "<li>none</li>"}</ul>
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
