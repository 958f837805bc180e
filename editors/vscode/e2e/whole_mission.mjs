// A whole mission in a real VS Code (code-server, the workbench and a Node extension host),
// driven as a user would through headless Chromium: the packaged extension is installed, the
// demo project is opened, a mission is started from the backlog through the palette, the plan
// is approved, the review's finding is read in the Problems panel with its assertion id, the
// hover on the changed code shows the handoff, the milestone is accepted from the code action,
// and Mission Control reaches `completed`. It saves a screenshot of Mission Control.
//
// Run by scripts/test as:
//   MISSIONS_BIN=… MISSIONS_DEMO=<a `missions demo --prepare` directory> MISSIONS_VSIX=… \
//   E2E_SCRATCH=<an empty directory> E2E_SCREENSHOT=<png path> node whole_mission.mjs
// beside code-server and playwright-core installed from this directory's package-lock.json.

import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const need = (name) => process.env[name] || fail(`${name} is not set`);
const bin = need("MISSIONS_BIN");
const demo = need("MISSIONS_DEMO");
const vsix = need("MISSIONS_VSIX");
const scratch = need("E2E_SCRATCH");
const screenshot = need("E2E_SCREENSHOT");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
// code-server is installed beside this script: the test command copies both under the target
// directory, never into the source tree.
const codeServer = join(here, "node_modules", "code-server", "out", "node", "entry.js");

const STEP_TIMEOUT = 90_000;
let step = "starting";
let server;
let browser;
let page;

function fail(message) {
  throw new Error(message);
}

function log(message) {
  step = message;
  process.stdout.write(`  · ${message}\n`);
}

/** A free loopback port (closed again before code-server takes it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Runs code-server's CLI with the test's private profile. */
function codeServerArgs(...args) {
  return [codeServer, "--user-data-dir", join(scratch, "user-data"), "--extensions-dir", join(scratch, "extensions"), ...args];
}

function environment() {
  return {
    ...process.env,
    // Never the user's code-server or Chromium profile.
    XDG_CONFIG_HOME: join(scratch, "xdg", "config"),
    XDG_DATA_HOME: join(scratch, "xdg", "data"),
    XDG_CACHE_HOME: join(scratch, "xdg", "cache"),
    HOME: join(scratch, "home"),
  };
}

async function startCodeServer() {
  mkdirSync(join(scratch, "home"), { recursive: true });
  execFileSync(process.execPath, codeServerArgs("--install-extension", vsix), { env: environment(), stdio: "pipe" });
  const settings = join(scratch, "user-data", "User", "settings.json");
  mkdirSync(dirname(settings), { recursive: true });
  writeFileSync(
    settings,
    JSON.stringify({
      "missions.server.path": bin,
      "workbench.startupEditor": "none",
      "security.workspace.trust.enabled": false,
      "telemetry.telemetryLevel": "off",
      "extensions.autoCheckUpdates": false,
      "extensions.autoUpdate": false,
      "update.mode": "none",
      "workbench.tips.enabled": false,
      "editor.hover.delay": 100,
      "chat.disableAIFeatures": true,
    }),
  );
  const port = await freePort();
  server = spawn(
    process.execPath,
    codeServerArgs(
      "--auth",
      "none",
      "--bind-addr",
      `127.0.0.1:${port}`,
      "--disable-telemetry",
      "--disable-update-check",
      "--disable-workspace-trust",
      "--disable-getting-started-override",
    ),
    // Its own process group, so the extension host and the language server it starts end
    // with it.
    { env: environment(), stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  let output = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`code-server did not start:\n${output}`)), STEP_TIMEOUT);
    const listen = (chunk) => {
      output += chunk;
      if (output.includes("HTTP server listening")) {
        clearTimeout(timer);
        resolve();
      }
    };
    server.stdout.on("data", listen);
    server.stderr.on("data", listen);
    server.once("exit", (code) => reject(new Error(`code-server exited (${code}):\n${output}`)));
  });
  return `http://127.0.0.1:${port}/?folder=${encodeURIComponent(demo)}`;
}

/** Runs a palette command by its title. */
async function palette(title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: STEP_TIMEOUT });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: STEP_TIMEOUT });
  await page.keyboard.press("Enter");
}

/** Opens a workspace file by its relative path with Quick Open. */
async function openFile(relative) {
  await page.keyboard.press("Control+P");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: STEP_TIMEOUT });
  await input.fill(relative);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: relative.split("/").pop() }).first().waitFor({ timeout: STEP_TIMEOUT });
  await page.keyboard.press("Enter");
  await page.locator(`.tab.active[data-resource-name="${relative.split("/").pop()}"]`).waitFor({ timeout: STEP_TIMEOUT });
}

/** Chooses the code action whose title begins with `title` in the open Quick Fix menu, with the
 * keyboard as a user would (the menu's overlay swallows synthetic clicks). */
async function chooseAction(title) {
  const rows = page.locator(".action-widget .monaco-list-row.action");
  await rows.filter({ hasText: title }).first().waitFor();
  for (let tries = (await rows.count()) + 1; tries > 0; tries--) {
    const focused = await page.locator(".action-widget .monaco-list-row.focused").getAttribute("aria-label").catch(() => null);
    if (focused?.startsWith(title)) {
      await page.keyboard.press("Enter");
      return;
    }
    await page.keyboard.press("ArrowDown");
  }
  fail(`the Quick Fix menu never focused ${title}`);
}

/** Clicks the button `label` of the notification whose text contains `text`. */
async function answerNotification(text, label) {
  const toast = page.locator(".notification-toast", { hasText: text }).last();
  await toast.waitFor({ timeout: STEP_TIMEOUT });
  await toast.locator(".monaco-button", { hasText: label }).first().click();
}

/** The mission's status as `missions status --json` prints it. */
function status() {
  const out = execFileSync(bin, ["status", "--json", "--workspace", demo], { env: environment(), encoding: "utf8" });
  const parsed = JSON.parse(out);
  return Array.isArray(parsed) ? parsed[0] : parsed;
}

/** Waits until the mission on disk satisfies `wanted`. */
async function waitForMission(wanted, what) {
  const started = Date.now();
  for (;;) {
    const mission = existsSync(join(demo, ".missions")) && readdirSync(join(demo, ".missions")).some((e) => e.startsWith("2")) ? status() : undefined;
    if (mission && wanted(mission)) {
      return mission;
    }
    if (Date.now() - started > STEP_TIMEOUT) {
      fail(`the mission never ${what}; last: ${JSON.stringify(mission && { state: mission.state, detail: mission.detail })}`);
    }
    await page.waitForTimeout(200);
  }
}

const waitingFor = (milestone) => (m) =>
  m.state === "awaiting_acceptance" && m.plan?.milestones.some((x) => x.id === milestone && x.status === "validated");

async function main() {
  log("installing the extension and starting code-server");
  const url = await startCodeServer();
  browser = await chromium.launch({ executablePath: browserPath, headless: true });
  page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.setDefaultTimeout(STEP_TIMEOUT);

  log("opening the demo project");
  await page.goto(url);
  await page.locator(".monaco-workbench").waitFor();
  // The extension is active and its server answered once the status bar item shows.
  await page.locator(".statusbar-item", { hasText: "Missions" }).first().waitFor();

  log("starting a mission from the backlog through the palette");
  await palette("Missions: Start Mission from Backlog");
  await page.locator(".quick-input-list .monaco-list-row", { hasText: "Add slugify" }).first().waitFor();
  const backlogRow = await page.locator(".quick-input-list .monaco-list-row", { hasText: "Add slugify" }).first().innerText();
  if (!backlogRow.includes("BACKLOG.md:3")) {
    fail(`the backlog picker does not show the item's location: ${backlogRow}`);
  }
  await page.locator(".quick-input-widget input").fill("Add slugify");
  await page.keyboard.press("Enter");
  const planned = await waitForMission((m) => m.state === "awaiting_approval", "reached plan approval");

  log(`approving the plan of ${planned.id} (Missions: Approve Plan opens plan.md and contract.md)`);
  await palette("Missions: Approve Plan");
  await page.locator(".tab", { hasText: "plan.md" }).first().waitFor();
  await page.locator(".tab", { hasText: "contract.md" }).first().waitFor();
  await answerNotification(`Approve the plan and validation contract of mission ${planned.id}?`, "Approve");
  await waitForMission(waitingFor("M1"), "waited for M1's acceptance");

  log("reading the review's finding in the Problems panel");
  await palette("View: Focus Problems");
  const problem = page.locator(".markers-panel .monaco-list-row", { hasText: "docstring's example" }).first();
  await problem.waitFor();
  const problemText = await problem.innerText();
  if (!problemText.includes("A2")) {
    fail(`the finding in the Problems panel lacks its assertion id A2: ${problemText}`);
  }

  log("hovering the changed code for the handoff");
  await openFile("textkit/slug.py");
  await palette("Go to Line/Column");
  await page.keyboard.type("5");
  await page.keyboard.press("Enter");
  await palette("Show or Focus Hover");
  // The handoff's part of the hover comes from the server, beside the diagnostic's.
  const hover = page.locator(".monaco-hover", { hasText: planned.id }).first();
  await hover.waitFor();
  const hoverText = await hover.innerText();
  if (!/F1/.test(hoverText) || !hoverText.includes(planned.id)) {
    fail(`the hover does not show the handoff of F1 in ${planned.id}: ${hoverText}`);
  }
  await page.keyboard.press("Escape");

  log("accepting M1 from the code action");
  await palette("Quick Fix...");
  await chooseAction("Missions: accept milestone M1");
  await waitForMission(waitingFor("M2"), "waited for M2's acceptance");

  log("sending a course correction through the palette");
  await palette("Missions: Course-Correct");
  const note = page.locator(".quick-input-widget input");
  await note.waitFor({ state: "visible" });
  await note.fill("Keep docstrings to one line.");
  await page.keyboard.press("Enter");
  await waitForMission(() => readFileSync(join(demo, ".missions", planned.id, "events.jsonl"), "utf8").includes("Keep docstrings to one line."), "recorded the course correction");

  log("accepting M2 through the palette");
  await palette("Missions: Accept Milestone");
  await waitForMission((m) => m.state === "completed", "completed");

  log("opening Mission Control");
  await page.keyboard.press("Escape");
  await palette("Missions: Open Mission Control");
  const control = page.frameLocator("iframe.webview.ready").frameLocator("iframe#active-frame");
  await control.locator("b", { hasText: "completed" }).waitFor();
  await control.locator("text=A4").first().waitFor();
  // The budget by role over time, the course correction sent, and the timeline, from the log.
  for (const role of ["orchestrator", "worker", "reviewer", "user_tester"]) {
    await control.locator(`polyline[data-role="${role}"]`).waitFor({ state: "attached" });
  }
  await control.locator(".corrections", { hasText: "Keep docstrings to one line." }).waitFor();
  await control.locator(".timeline", { hasText: "M1 accepted" }).waitFor();
  // The screenshot shows Mission Control alone, as a user would read it.
  await palette("View: Toggle Panel Visibility");
  await page.screenshot({ path: screenshot });
  process.stdout.write(`ok: a whole mission in code-server (${planned.id}); Mission Control: ${screenshot}\n`);
}

try {
  await main();
} catch (error) {
  process.stderr.write(`FAILED while ${step}: ${error instanceof Error ? error.message : String(error)}\n`);
  if (page) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-failure.png") }).catch(() => undefined);
    process.stderr.write(`  screenshot: ${screenshot.replace(/\.png$/, "-failure.png")}\n`);
  }
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => undefined);
  if (server?.pid) {
    try {
      process.kill(-server.pid, "SIGTERM");
    } catch {
      // Already gone.
    }
  }
}
