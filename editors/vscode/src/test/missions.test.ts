// The extension's decisions, without VS Code.
import * as assert from "node:assert/strict";
import { test } from "node:test";

import { candidates, groupBacklog, itemLocation, shownMission, Snapshot, statusText, waitingMilestone } from "../missions";

function snapshot(id: string, state: string, updated_at: string, extra: Partial<Snapshot> = {}): Snapshot {
  return { id, title: id, state, updated_at, findings: [], ...extra };
}

test("backlog items are grouped by source and show where they live", () => {
  const groups = groupBacklog([
    { id: "src/a.py:3", source: "todo", title: "TODO: b", location: { path: "src/a.py", line: 3 } },
    { id: "BACKLOG.md:3", source: "markdown", title: "Add slugify" },
    { id: "BACKLOG.md:1", source: "markdown", title: "First" },
  ]);
  assert.deepEqual(
    groups.map((g) => [g.source, g.items.map((i) => i.id)]),
    [
      ["markdown", ["BACKLOG.md:1", "BACKLOG.md:3"]],
      ["todo", ["src/a.py:3"]],
    ],
  );
  assert.equal(itemLocation(groups[1].items[0]), "src/a.py:3");
  assert.equal(itemLocation(groups[0].items[0]), "BACKLOG.md:1");
});

test("the waiting milestone is the validated one of a mission awaiting acceptance", () => {
  const plan = {
    milestones: [
      { id: "M1", title: "one", status: "accepted", features: [] },
      { id: "M2", title: "two", status: "validated", features: [] },
    ],
  };
  assert.equal(waitingMilestone(snapshot("m", "awaiting_acceptance", "t", { plan }))?.id, "M2");
  assert.equal(waitingMilestone(snapshot("m", "running", "t", { plan })), undefined);
});

test("commands act on the missions that fit, most recent first, and the status bar shows a live one", () => {
  const missions = [
    snapshot("old", "completed", "2026-11-28T08:00:00Z"),
    snapshot("a", "running", "2026-11-28T09:00:00Z", {
      current: { milestone: "M1", feature: "F2" },
      budget: { used_tokens: 12_400, used_usd: 0.1 },
    }),
    snapshot("b", "paused", "2026-11-28T09:30:00Z"),
  ];
  assert.deepEqual(
    candidates(missions, (s) => s.state !== "completed").map((s) => s.id),
    ["b", "a"],
  );
  assert.equal(shownMission(missions)?.id, "b");
  assert.equal(statusText(missions[1]), "$(rocket) a: running · M1 · F2 · 12k tokens");
  assert.equal(statusText(snapshot("c", "running", "t", { interrupted: true })), "$(rocket) c: interrupted");
  assert.equal(statusText(undefined), "$(rocket) Missions");
});
