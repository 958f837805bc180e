// Mission Control's history (timeline, budget by role, course corrections) folded from the
// event log, without VS Code.
import * as assert from "node:assert/strict";
import { test } from "node:test";

import { budgetChart, renderControl } from "../control";
import { completeLines, emptyHistory, foldLog, KEPT } from "../history";

const usage = (ts: string, role: string, input: number, output: number) =>
  JSON.stringify({ seq: 0, ts, type: "usage_recorded", role, run_id: "r", provider: "p", model: "m", usage: { input, output, cache_read: 1, cache_write: 2, reasoning: 0 }, cost_usd: null });

const log = [
  JSON.stringify({ ts: "2026-11-28T10:00:00Z", type: "mission_created", title: "Add slugify" }),
  usage("2026-11-28T10:00:01Z", "orchestrator", 100, 10),
  JSON.stringify({ ts: "2026-11-28T10:00:02Z", type: "plan_approved", contract_sha256: "x" }),
  usage("2026-11-28T10:00:03Z", "worker", 200, 20),
  usage("2026-11-28T10:00:04Z", "orchestrator", 50, 5),
  JSON.stringify({ ts: "2026-11-28T10:00:05Z", type: "course_correction_noted", note: "use <unicodedata>\nplease" }),
  JSON.stringify({ ts: "2026-11-28T10:00:06Z", type: "finding_recorded", finding: { id: "finding-1", severity: "error", validator: "command", path: "a.py", line: 3, message: "A1 fails\ndetails" } }),
  JSON.stringify({ ts: "2026-11-28T10:00:07Z", type: "cursor_moved", milestone: "M1" }),
].join("\n") + "\n";

test("the log folds into a timeline, cumulative tokens by role, and the course corrections", () => {
  const bytes = new TextEncoder().encode(log);
  const lines = completeLines(bytes);
  const history = foldLog(emptyHistory(), lines.text, lines.length);
  assert.equal(history.offset, bytes.length);
  assert.deepEqual(
    history.timeline.map((e) => e.text),
    ["mission created: Add slugify", "plan approved; contract locked", "course correction: use <unicodedata>", "finding-1 (error, command) at a.py:3: A1 fails"],
  );
  // Tokens count cache reads and writes, as the engine's budget does.
  assert.deepEqual(history.budget.map((p) => p.byRole), [
    { orchestrator: 113 },
    { orchestrator: 113, worker: 223 },
    { orchestrator: 171, worker: 223 },
  ]);
  assert.deepEqual(history.corrections, [{ ts: "2026-11-28T10:00:05Z", text: "use <unicodedata>\nplease" }]);
});

test("a line the writer has not finished waits for the next read, even mid-character", () => {
  const whole = new TextEncoder().encode(log + JSON.stringify({ ts: "t", type: "course_correction_noted", note: "café" }) + "\n");
  const cut = whole.length - 4; // inside the "é" and before the newline
  const first = completeLines(whole.subarray(0, cut));
  let history = foldLog(emptyHistory(), first.text, first.length);
  assert.equal(history.offset, new TextEncoder().encode(log).length);
  assert.equal(history.corrections.length, 1);
  const rest = completeLines(whole.subarray(history.offset));
  history = foldLog(history, rest.text, rest.length);
  assert.equal(history.offset, whole.length);
  assert.equal(history.corrections[1].text, "café");
});

test("damaged lines are skipped and a long mission's history stays bounded", () => {
  const damaged = foldLog(emptyHistory(), "{not json\n42\nnull\n" + log, 10);
  assert.equal(damaged.timeline.length, 4);
  const many = Array.from({ length: KEPT * 3 }, (_, i) => usage(new Date(Date.UTC(2026, 10, 28, 10, 0, i)).toISOString(), "worker", 1, 0)).join("\n") + "\n";
  const history = foldLog(emptyHistory(), many, 0);
  assert.ok(history.budget.length <= KEPT, `${history.budget.length} points`);
  assert.equal(history.budget[0].byRole.worker, 4, "the first point stays");
  assert.equal(history.budget[history.budget.length - 1].byRole.worker, KEPT * 3 * 4, "so does the last");
});

test("the budget chart draws a line per role and says the totals in words", () => {
  const history = foldLog(emptyHistory(), log, 0);
  const svg = budgetChart(history.budget);
  assert.equal((svg.match(/<polyline class="role"/g) ?? []).length, 2);
  assert.ok(svg.includes('data-role="orchestrator"') && svg.includes('data-role="worker"'));
  assert.ok(svg.includes("orchestrator: 171 tokens") && svg.includes("worker: 223 tokens"));
  // Every coordinate is a finite number inside the chart.
  for (const [, x, y] of svg.matchAll(/(-?[\d.]+),(-?[\d.]+)/g)) {
    assert.ok(Number(x) >= 0 && Number(x) <= 480 && Number(y) >= 0 && Number(y) <= 140, `${x},${y}`);
  }
  assert.equal(budgetChart([]), "<p>No model calls yet.</p>");
});

test("Mission Control shows the history, escaped, newest first", () => {
  const history = foldLog(emptyHistory(), log, 0);
  const html = renderControl(
    { id: "m", title: "t", state: "running", updated_at: "", findings: [], active_run: { role: "user_tester", milestone: "M1", model: "gpt <x>", tool: "run_command ls" } },
    "s",
    "n",
    history,
  );
  assert.ok(html.includes("Running: user tester M1 on <code>gpt &lt;x&gt;</code> — <code>run_command ls</code>"));
  assert.ok(html.includes("Course corrections (1)") && html.includes("use &lt;unicodedata&gt;"));
  const timeline = html.slice(html.indexOf('<ol class="timeline">'));
  assert.ok(timeline.indexOf("finding-1") < timeline.indexOf("mission created"), "newest first");
  assert.ok(html.includes("<svg") && !/https?:\/\/(?!www\.w3\.org)/.test(html));
});
