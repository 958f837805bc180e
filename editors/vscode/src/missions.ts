// What the extension knows of missions, without VS Code: the shapes the server sends
// (SPEC §8; the status snapshot is the same object `missions status --json` prints) and the
// pure decisions the commands make on them. Tested with node's test runner.

export interface BacklogItem {
  id: string;
  source: string;
  title: string;
  description?: string;
  location?: { path: string; line: number } | null;
}

export interface Milestone {
  id: string;
  title: string;
  status: string;
  features: { id: string; title: string; status: string }[];
}

export interface Finding {
  id: string;
  milestone: string;
  severity: string;
  validator: string;
  path?: string;
  line?: number;
  message: string;
}

export interface Snapshot {
  id: string;
  title: string;
  state: string;
  pause_reason?: string | null;
  detail?: string | null;
  current?: { milestone?: string | null; feature?: string | null } | null;
  budget?: { used_tokens: number; used_usd: number; max_tokens?: number | null; max_usd?: number | null };
  plan?: { milestones: Milestone[] } | null;
  findings: Finding[];
  interrupted?: boolean;
  updated_at: string;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** Whether a mission can still change. */
export function isLive(snapshot: Snapshot): boolean {
  return !TERMINAL.has(snapshot.state);
}

/** The milestone that waits for acceptance. */
export function waitingMilestone(snapshot: Snapshot): Milestone | undefined {
  if (snapshot.state !== "awaiting_acceptance") {
    return undefined;
  }
  return snapshot.plan?.milestones.find((m) => m.status === "validated");
}

/** Backlog items grouped by source, in the order the picker shows them. */
export function groupBacklog(items: BacklogItem[]): { source: string; items: BacklogItem[] }[] {
  const groups = new Map<string, BacklogItem[]>();
  for (const item of [...items].sort((a, b) => a.id.localeCompare(b.id))) {
    const group = groups.get(item.source) ?? [];
    group.push(item);
    groups.set(item.source, group);
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([source, items]) => ({ source, items }));
}

/** Where a backlog item lives, as the picker shows it. */
export function itemLocation(item: BacklogItem): string {
  return item.location ? `${item.location.path}:${item.location.line}` : item.id;
}

/** The missions a command may act on, most recently changed first. */
export function candidates(snapshots: Snapshot[], wanted: (s: Snapshot) => boolean): Snapshot[] {
  return snapshots.filter(wanted).sort((a, b) => b.updated_at.localeCompare(a.updated_at));
}

/** The status bar text: state, milestone · feature, and the tokens used. */
export function statusText(snapshot: Snapshot | undefined): string {
  if (!snapshot) {
    return "$(rocket) Missions";
  }
  const state = snapshot.interrupted ? "interrupted" : snapshot.state.replace(/_/g, " ");
  const where = [snapshot.current?.milestone, snapshot.current?.feature].filter((p) => p).join(" · ");
  const tokens = snapshot.budget ? ` · ${Math.round(snapshot.budget.used_tokens / 1000)}k tokens` : "";
  return `$(rocket) ${snapshot.id}: ${state}${where ? ` · ${where}` : ""}${tokens}`;
}

/** The mission the status bar shows: the live one changed last, else the last one. */
export function shownMission(snapshots: Snapshot[]): Snapshot | undefined {
  const byRecency = [...snapshots].sort((a, b) => b.updated_at.localeCompare(a.updated_at));
  return byRecency.find(isLive) ?? byRecency[0];
}
