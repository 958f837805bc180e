// Missions for VS Code: one language client per window for every `file` document, palette
// commands that act on the current mission, and a status bar item. Everything essential also
// works through the server's own prompts, code actions and lenses (SPEC §8); this adds
// pickers and a glance at the state. Command ids are `missionsClient.*`, never the server's
// `missions.*` executeCommand ids.

import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

import { ControlSnapshot, renderControl } from "./control";
import { completeLines, emptyHistory, foldLog, History } from "./history";
import { BacklogItem, candidates, groupBacklog, isLive, itemLocation, shownMission, Snapshot, statusText, waitingMilestone } from "./missions";

let client: LanguageClient | undefined;
const missions = new Map<string, Snapshot>();
let statusItem: vscode.StatusBarItem;
/** The Mission Control panel and the mission it shows. */
let controlPanel: { panel: vscode.WebviewPanel; mission: string } | undefined;

/** A fresh nonce for the page's one script. */
function nonce(): string {
  return randomBytes(16).toString("hex");
}

/** What each mission's log has said so far, folded for Mission Control. */
const histories = new Map<string, History>();

/** Folds what the mission's log gained since it was last read. The log is append-only; one
 * that got shorter was replaced, so it is read again from the start. */
async function readHistory(mission: string): Promise<History> {
  let history = histories.get(mission) ?? emptyHistory();
  const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  if (!root) {
    return history;
  }
  const log = path.join(root, ".missions", mission, "events.jsonl");
  try {
    const file = await fs.open(log, "r");
    try {
      const { size } = await file.stat();
      if (size < history.offset) {
        history = emptyHistory();
      }
      if (size > history.offset) {
        const buffer = Buffer.alloc(size - history.offset);
        const { bytesRead } = await file.read(buffer, 0, buffer.length, history.offset);
        const lines = completeLines(buffer.subarray(0, bytesRead));
        history = foldLog(history, lines.text, lines.length);
      }
    } finally {
      await file.close();
    }
  } catch {
    // No log (yet) or one that cannot be read: the page shows the snapshot alone.
  }
  histories.set(mission, history);
  return history;
}

/** Counts redraws, so a slow one never draws over a newer one. */
let redraws = 0;

async function drawControl(): Promise<void> {
  const shown = controlPanel;
  const snapshot = shown && missions.get(shown.mission);
  if (!shown || !snapshot) {
    return;
  }
  const redraw = ++redraws;
  const history = await readHistory(shown.mission);
  // The panel may have closed, moved to another mission or been redrawn since while the log
  // was read.
  if (redraw === redraws && controlPanel === shown && shown.mission === snapshot.id) {
    shown.panel.webview.html = renderControl(snapshot as ControlSnapshot, shown.panel.webview.cspSource, nonce(), history);
  }
}

/** Opens Mission Control for the current mission: live from `missions/didChange`, with the
 * gates' buttons and findings that open their file. */
async function openMissionControl(): Promise<void> {
  const mission = await pickMission(() => true, "in this workspace");
  if (!mission) {
    return;
  }
  if (controlPanel) {
    controlPanel.mission = mission.id;
    controlPanel.panel.reveal();
    await drawControl();
    return;
  }
  const panel = vscode.window.createWebviewPanel("missionsControl", `Mission ${mission.id}`, vscode.ViewColumn.Beside, {
    enableScripts: true,
    localResourceRoots: [],
  });
  controlPanel = { panel, mission: mission.id };
  panel.onDidDispose(() => (controlPanel = undefined));
  panel.webview.onDidReceiveMessage(async (message: { gate?: string; path?: string; line?: number }) => {
    if (message.gate) {
      await vscode.commands.executeCommand(`missionsClient.${message.gate}`);
    } else if (message.path && vscode.workspace.workspaceFolders?.length) {
      const root = vscode.workspace.workspaceFolders[0].uri.fsPath;
      const line = Math.max((message.line ?? 1) - 1, 0);
      await vscode.window.showTextDocument(vscode.Uri.file(path.join(root, message.path)), {
        viewColumn: vscode.ViewColumn.One,
        selection: new vscode.Range(line, 0, line, 0),
      });
    }
  });
  await drawControl();
}

/** The server binary: the `missions.server.path` setting, else `missions` on PATH. */
function serverPath(): string {
  const configured = vscode.workspace.getConfiguration("missions").get<string>("server.path", "").trim();
  return configured || "missions";
}

/** Runs a server command (SPEC §8) with one object argument. */
async function execute<T>(command: string, argument: object = {}): Promise<T> {
  if (!client) {
    throw new Error("the Missions language server is not running");
  }
  return client.sendRequest("workspace/executeCommand", { command, arguments: [argument] }) as Promise<T>;
}

async function refresh(): Promise<Snapshot[]> {
  const snapshots = await execute<Snapshot[]>("missions.status");
  for (const snapshot of snapshots) {
    missions.set(snapshot.id, snapshot);
  }
  updateStatus();
  return snapshots;
}

function updateStatus(): void {
  const shown = shownMission([...missions.values()]);
  statusItem.text = statusText(shown);
  statusItem.tooltip = shown ? `${shown.title} — ${shown.findings.length} open finding(s)` : "Missions";
  statusItem.show();
}

/** The mission a command acts on: the only one that fits, or the user's pick. */
async function pickMission(wanted: (s: Snapshot) => boolean, what: string): Promise<Snapshot | undefined> {
  const fitting = candidates(await refresh(), wanted);
  if (fitting.length === 0) {
    void vscode.window.showInformationMessage(`Missions: no mission ${what}.`);
    return undefined;
  }
  if (fitting.length === 1) {
    return fitting[0];
  }
  const picked = await vscode.window.showQuickPick(
    fitting.map((s) => ({ label: s.id, description: s.title, detail: s.state, snapshot: s })),
    { placeHolder: `Which mission ${what}?` },
  );
  return picked?.snapshot;
}

async function startFromBacklog(): Promise<void> {
  const items = await execute<BacklogItem[]>("missions.backlog");
  if (items.length === 0) {
    void vscode.window.showInformationMessage(
      "Missions: the backlog is empty. Add `- [ ] …` items to BACKLOG.md or TODO.md, or TODO comments in the code.",
    );
    return;
  }
  const picks: (vscode.QuickPickItem & { item?: BacklogItem })[] = [];
  for (const group of groupBacklog(items)) {
    picks.push({ label: group.source, kind: vscode.QuickPickItemKind.Separator });
    for (const item of group.items) {
      picks.push({ label: item.title, description: itemLocation(item), detail: item.description || undefined, item });
    }
  }
  const picked = await vscode.window.showQuickPick(picks, { placeHolder: "Start a mission from…", matchOnDetail: true });
  if (picked?.item) {
    const { missionId } = await execute<{ missionId: string }>("missions.start", { itemId: picked.item.id });
    void vscode.window.showInformationMessage(`Missions: mission ${missionId} started: ${picked.item.title}`);
  }
}

async function startFromText(text?: string): Promise<void> {
  const value = text ?? (await vscode.window.showInputBox({ prompt: "What should the mission do?" }));
  if (value && value.trim()) {
    const { missionId } = await execute<{ missionId: string }>("missions.start", { text: value });
    void vscode.window.showInformationMessage(`Missions: mission ${missionId} started.`);
  }
}

async function approvePlan(): Promise<void> {
  const mission = await pickMission((s) => s.state === "awaiting_approval", "waits for plan approval");
  if (!mission || !vscode.workspace.workspaceFolders?.length) {
    return;
  }
  // The plan and its contract side by side, then the decision.
  const root = vscode.workspace.workspaceFolders[0].uri.fsPath;
  const plan = vscode.Uri.file(path.join(root, ".missions", mission.id, "plan.md"));
  const contract = vscode.Uri.file(path.join(root, ".missions", mission.id, "contract.md"));
  await vscode.window.showTextDocument(plan, { viewColumn: vscode.ViewColumn.One, preview: false });
  await vscode.window.showTextDocument(contract, { viewColumn: vscode.ViewColumn.Two, preview: false });
  const choice = await vscode.window.showInformationMessage(
    `Approve the plan and validation contract of mission ${mission.id}?`,
    "Approve",
    "Cancel the mission",
  );
  if (choice === "Approve") {
    await execute("missions.approvePlan", { missionId: mission.id });
  } else if (choice === "Cancel the mission") {
    await execute("missions.cancel", { missionId: mission.id });
  }
}

async function milestoneCommand(reject: boolean): Promise<void> {
  const mission = await pickMission((s) => waitingMilestone(s) !== undefined, "waits for acceptance");
  const milestone = mission && waitingMilestone(mission);
  if (!mission || !milestone) {
    return;
  }
  if (!reject) {
    await execute("missions.acceptMilestone", { missionId: mission.id, milestoneId: milestone.id });
    return;
  }
  const feedback = await vscode.window.showInputBox({
    prompt: `What should change in ${milestone.id} (${milestone.title})?`,
    validateInput: (v) => (v.trim() ? undefined : "A rejection needs feedback."),
  });
  if (feedback) {
    await execute("missions.rejectMilestone", { missionId: mission.id, milestoneId: milestone.id, feedback });
  }
}

async function rollback(): Promise<void> {
  const mission = await pickMission((s) => s.state !== "completed" && s.state !== "cancelled", "to roll back");
  const started = mission?.plan?.milestones.filter((m) => m.status !== "pending") ?? [];
  const picked = await vscode.window.showQuickPick(
    started.map((m) => ({ label: m.id, description: m.title, milestone: m })),
    { placeHolder: "Roll back to the start of… (the dropped commits are kept)" },
  );
  if (mission && picked) {
    await execute("missions.rollback", { missionId: mission.id, milestoneId: picked.milestone.id });
  }
}

async function findingCommand(command: "missions.fixFinding" | "missions.dismissFinding"): Promise<void> {
  const mission = await pickMission((s) => s.findings.length > 0, "with open findings");
  if (!mission) {
    return;
  }
  const picked = await vscode.window.showQuickPick(
    mission.findings.map((f) => ({
      label: f.id,
      description: f.path ? `${f.path}${f.line ? `:${f.line}` : ""}` : undefined,
      detail: f.message.split("\n")[0],
      finding: f,
    })),
    { placeHolder: command === "missions.fixFinding" ? "Fix which finding?" : "Dismiss which finding?" },
  );
  if (!picked) {
    return;
  }
  const argument: Record<string, string> = { missionId: mission.id, findingId: picked.finding.id };
  if (command === "missions.dismissFinding") {
    const reason = await vscode.window.showInputBox({ prompt: "Why? (optional)" });
    if (reason) {
      argument.reason = reason;
    }
  }
  await execute(command, argument);
}

function control(command: string, wanted: (s: Snapshot) => boolean, what: string): () => Promise<void> {
  return async () => {
    const mission = await pickMission(wanted, what);
    if (mission) {
      await execute(command, { missionId: mission.id });
    }
  };
}

/** Wraps a command so a failure is shown, not lost. */
function guarded(run: (...args: never[]) => Promise<void>): (...args: never[]) => Promise<void> {
  return async (...args) => {
    try {
      await run(...args);
    } catch (error) {
      void vscode.window.showErrorMessage(`Missions: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  statusItem.command = "missionsClient.openMissionControl";
  context.subscriptions.push(statusItem);

  const command = serverPath();
  const serverOptions: ServerOptions = {
    run: { command, args: ["lsp"], transport: TransportKind.stdio },
    debug: { command, args: ["lsp"], transport: TransportKind.stdio },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }],
    initializationOptions: vscode.workspace.getConfiguration("missions").get("settings", {}),
  };
  client = new LanguageClient("missions", "Missions", serverOptions, clientOptions);
  client.onNotification("missions/didChange", (snapshot: Snapshot) => {
    missions.set(snapshot.id, snapshot);
    updateStatus();
    if (controlPanel?.mission === snapshot.id) {
      void drawControl();
    }
  });
  try {
    await client.start();
  } catch (error) {
    client = undefined;
    const choice = await vscode.window.showErrorMessage(
      `Missions: cannot start the language server \`${command}\` (${error instanceof Error ? error.message : String(error)}). ` +
        "Install it (see the README) or set `missions.server.path`.",
      "Open Setting",
    );
    if (choice === "Open Setting") {
      await vscode.commands.executeCommand("workbench.action.openSettings", "missions.server.path");
    }
    return;
  }
  context.subscriptions.push({ dispose: () => void client?.stop() });

  const register = (id: string, run: (...args: never[]) => Promise<void>) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, guarded(run)));
  register("missionsClient.startFromBacklog", startFromBacklog);
  register("missionsClient.startFromText", () => startFromText());
  register("missionsClient.startFromSelection", async () => {
    const editor = vscode.window.activeTextEditor;
    const text = editor?.document.getText(editor.selection);
    await startFromText(text && text.trim() ? text : undefined);
  });
  register("missionsClient.approvePlan", approvePlan);
  register("missionsClient.acceptMilestone", () => milestoneCommand(false));
  register("missionsClient.rejectMilestone", () => milestoneCommand(true));
  register("missionsClient.rollback", rollback);
  register("missionsClient.pause", control("missions.pause", (s) => isLive(s) && s.state !== "paused", "to pause"));
  register("missionsClient.resume", control("missions.resume", (s) => s.state === "paused" || !!s.interrupted, "to resume"));
  register("missionsClient.cancel", control("missions.cancel", isLive, "to cancel"));
  register("missionsClient.courseCorrect", async () => {
    const mission = await pickMission(isLive, "to correct");
    const note = mission && (await vscode.window.showInputBox({ prompt: "Course correction for the orchestrator and the next worker" }));
    if (mission && note) {
      await execute("missions.courseCorrect", { missionId: mission.id, note });
    }
  });
  register("missionsClient.fixFinding", () => findingCommand("missions.fixFinding"));
  register("missionsClient.dismissFinding", () => findingCommand("missions.dismissFinding"));
  register("missionsClient.openMissionControl", openMissionControl);
  register("missionsClient.status", async () => {
    const snapshots = await refresh();
    const picked = await vscode.window.showQuickPick(
      snapshots.map((s) => ({
        label: s.id,
        description: s.interrupted ? "interrupted" : s.state,
        detail: `${s.title} — ${s.findings.length} open finding(s)`,
      })),
      { placeHolder: "Missions in this workspace" },
    );
    if (picked && vscode.workspace.workspaceFolders?.length) {
      const root = vscode.workspace.workspaceFolders[0].uri.fsPath;
      await vscode.window.showTextDocument(vscode.Uri.file(path.join(root, ".missions", picked.label, "plan.md")));
    }
  });
  await refresh().catch(() => undefined);
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
