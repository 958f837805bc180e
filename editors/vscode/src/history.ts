// What Mission Control shows of a mission's past, folded from its event log
// (`.missions/<id>/events.jsonl`, SPEC §4: append-only, one JSON object per line): the event
// timeline, the tokens each role has burned over time, and the course corrections sent. The
// log only grows, so the extension reads each new part once and folds it here; a pure
// function, so it is unit-tested without VS Code.

/** One line of the timeline. */
export interface TimelineEntry {
  ts: string;
  text: string;
}

/** The tokens each role had used, in total, at `ts`. */
export interface BudgetPoint {
  ts: string;
  byRole: Record<string, number>;
}

export interface History {
  /** Bytes of the log folded so far: always the end of a complete line. */
  offset: number;
  timeline: TimelineEntry[];
  budget: BudgetPoint[];
  corrections: TimelineEntry[];
}

/** How many timeline entries and budget points are kept: the view shows recent history, and a
 * long mission must not grow the extension's memory without bound. */
export const KEPT = 400;

export function emptyHistory(): History {
  return { offset: 0, timeline: [], budget: [], corrections: [] };
}

// The log's events as far as the view needs them (field names as SPEC §4 writes them).
interface LogEvent {
  type?: string;
  ts?: string;
  [field: string]: unknown;
}

const text = (value: unknown): string => (typeof value === "string" ? value : value == null ? "" : JSON.stringify(value));
const firstLine = (value: unknown): string => text(value).split("\n")[0];

/** The timeline's line for an event, or nothing for the ones too fine-grained to show
 * (usage, cursor moves, run bookkeeping). */
export function describe(event: LogEvent): string | undefined {
  const e = event as Record<string, unknown>;
  switch (event.type) {
    case "mission_created":
      return `mission created: ${text(e.title)}`;
    case "plan_submitted":
      return "plan submitted";
    case "plan_approved":
      return "plan approved; contract locked";
    case "state_changed": {
      const reason = e.pause_reason ? ` (${text(e.pause_reason)})` : "";
      const detail = e.detail ? `: ${firstLine(e.detail)}` : "";
      return `state: ${text(e.state).replace(/_/g, " ")}${reason}${detail}`;
    }
    case "milestone_started":
      return `${text(e.milestone)} started`;
    case "feature_started":
      return `${text(e.feature)} started`;
    case "run_started":
      return `${text(e.role).replace(/_/g, " ")} started${e.feature ? ` on ${text(e.feature)}` : e.milestone ? ` on ${text(e.milestone)}` : ""}`;
    case "handoff_recorded": {
      const handoff = (e.handoff ?? {}) as Record<string, unknown>;
      return `${text(handoff.feature)} handed off: ${firstLine(handoff.summary)}`;
    }
    case "assertion_checked":
      return `${text(e.assertion)} ${text(e.status)}`;
    case "finding_recorded": {
      const finding = (e.finding ?? {}) as Record<string, unknown>;
      const place = finding.path ? ` at ${text(finding.path)}${finding.line ? `:${text(finding.line)}` : ""}` : "";
      return `${text(finding.id)} (${text(finding.severity)}, ${text(finding.validator)})${place}: ${firstLine(finding.message)}`;
    }
    case "finding_status_changed":
      return `${text(e.finding)} ${text(e.status)}${e.reason ? `: ${firstLine(e.reason)}` : ""}`;
    case "decision_recorded":
      return `${text(e.milestone)} boundary decided ${text(e.decision)}: ${firstLine(e.notes)}`;
    case "features_added":
      return `${text(e.milestone)}: features added`;
    case "milestone_committed":
      return `${text(e.milestone)} committed ${text(e.commit).slice(0, 8)}`;
    case "milestone_accepted":
      return `${text(e.milestone)} accepted`;
    case "milestone_rejected":
      return `${text(e.milestone)} rejected: ${firstLine(e.feedback)}`;
    case "milestone_rolled_back":
      return `${text(e.milestone)} rolled back (kept at ${text(e.saved_ref)})`;
    case "assertions_added":
      return "assertions added";
    case "assertion_waived":
      return `${text(e.assertion)} waived: ${firstLine(e.reason)}`;
    case "course_correction_noted":
      return `course correction: ${firstLine(e.note)}`;
    case "user_changes_committed":
      return `your changes committed: ${(Array.isArray(e.files) ? e.files : []).map(text).join(", ")}`;
    case "project_check_ran":
      return `${text(e.command)} exit ${e.exit_code == null ? "?" : text(e.exit_code)}, ${text(e.findings)} finding(s)`;
    default:
      return undefined;
  }
}

/** Every token a usage event reports (input with cache reads and writes, plus output), as the
 * engine counts them against the budget. */
function usageTokens(usage: unknown): number {
  const u = (usage ?? {}) as Record<string, unknown>;
  const n = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  return n(u.input) + n(u.output) + n(u.cache_read) + n(u.cache_write);
}

const keepLast = <T>(list: T[]): T[] => (list.length > KEPT ? list.slice(list.length - KEPT) : list);

/** The budget's points thinned to at most `KEPT`: every other one goes, as often as needed;
 * the first and the last stay, so the chart still spans the whole mission. */
function thin(points: BudgetPoint[]): BudgetPoint[] {
  let kept = points;
  while (kept.length > KEPT) {
    const last = kept[kept.length - 1];
    kept = kept.filter((_, i) => i % 2 === 0);
    if (kept[kept.length - 1] !== last) {
      kept.push(last);
    }
  }
  return kept;
}

/** The complete lines at the start of `bytes` (read from the log after the folded offset): the
 * text to fold and how many bytes it spans. A line the writer has not finished stays for the
 * next read, so a multi-byte character is never cut. */
export function completeLines(bytes: Uint8Array): { text: string; length: number } {
  const end = bytes.lastIndexOf(0x0a) + 1;
  return { text: new TextDecoder().decode(bytes.subarray(0, end)), length: end };
}

/** Folds complete log lines `chunk`, `length` bytes long and read at `history.offset`, into
 * `history`. Lines that are not JSON are skipped: the view never fails on a damaged line. */
export function foldLog(history: History, chunk: string, length: number): History {
  const lines = chunk.split("\n").filter((line) => line.trim());
  const timeline = [...history.timeline];
  const budget = [...history.budget];
  const corrections = [...history.corrections];
  for (const line of lines) {
    let event: LogEvent;
    try {
      event = JSON.parse(line) as LogEvent;
    } catch {
      continue;
    }
    if (typeof event !== "object" || event === null) {
      continue;
    }
    const ts = text(event.ts);
    if (event.type === "usage_recorded") {
      const last = budget.length ? budget[budget.length - 1].byRole : {};
      const role = text(event.role);
      budget.push({ ts, byRole: { ...last, [role]: (last[role] ?? 0) + usageTokens(event.usage) } });
      continue;
    }
    if (event.type === "course_correction_noted") {
      corrections.push({ ts, text: text(event.note) });
    }
    const entry = describe(event);
    if (entry !== undefined) {
      timeline.push({ ts, text: entry });
    }
  }
  return {
    offset: history.offset + length,
    timeline: keepLast(timeline),
    budget: thin(budget),
    corrections: keepLast(corrections),
  };
}
