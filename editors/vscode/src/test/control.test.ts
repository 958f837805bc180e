// Mission Control's page, without VS Code.
import * as assert from "node:assert/strict";
import { test } from "node:test";

import { ControlSnapshot, escape, renderControl } from "../control";

function mission(extra: Partial<ControlSnapshot> = {}): ControlSnapshot {
  return {
    id: "m1",
    title: "Add <slugify>",
    state: "awaiting_acceptance",
    updated_at: "t",
    budget: { used_tokens: 1200, used_usd: 0.5 },
    plan: { milestones: [{ id: "M1", title: "core", status: "validated", features: [{ id: "F1", title: "slug", status: "done" }] }] },
    contract: { assertions: [{ id: "A1", milestone: "M1", description: "tests pass", status: "passing" }] },
    findings: [{ id: "finding-1", milestone: "M1", severity: "warning", validator: "review", path: "src/a.py", line: 3, message: "unclear <name>\nmore" }],
    ...extra,
  };
}

test("the page escapes what the mission says and loads nothing but its own nonce'd script", () => {
  const html = renderControl(mission(), "vscode-resource:", "abc123");
  assert.match(html, /default-src 'none'; style-src vscode-resource: 'unsafe-inline'; script-src 'nonce-abc123';/);
  assert.match(html, /<script nonce="abc123">/);
  assert.equal((html.match(/<script/g) ?? []).length, 1);
  assert.ok(!/https?:\/\//.test(html), "no remote resource");
  assert.ok(html.includes("Add &lt;slugify&gt;"));
  assert.ok(html.includes("unclear &lt;name&gt;") && !html.includes("more"), "the first line of a finding, escaped");
  assert.equal(escape(`"'&`), "&quot;&#39;&amp;");
});

test("the page lists milestones, assertions and findings, with the gate that waits", () => {
  const html = renderControl(mission(), "s", "n");
  assert.ok(html.includes("<b>M1</b> core") && html.includes("F1 slug"));
  assert.ok(html.includes("<b>A1</b>") && html.includes("passing"));
  assert.ok(html.includes('data-path="src/a.py" data-line="3"'));
  assert.ok(html.includes('data-gate="acceptMilestone"') && html.includes('data-gate="rejectMilestone"'));
  assert.ok(!html.includes('data-gate="approvePlan"'));
  const planning = renderControl(mission({ state: "awaiting_approval", plan: null, findings: [] }), "s", "n");
  assert.ok(planning.includes('data-gate="approvePlan"') && planning.includes("no plan yet"));
  const paused = renderControl(mission({ state: "paused", findings: [] }), "s", "n");
  assert.ok(paused.includes('data-gate="resume"'));
});
