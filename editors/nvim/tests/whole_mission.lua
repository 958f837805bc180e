-- A whole mission through the plugin in a real headless Neovim: the demo project's backlog
-- item is started with :MissionStart, the gates are answered as a user would (approve the
-- plan, accept each milestone) through vim.ui.select, and the test checks the diagnostics
-- seen on the way, the hover on the code the mission wrote, the statusline while it ran, the
-- Mission Control buffer and the final state.
--
-- Run by scripts/test as:
--   MISSIONS_BIN=… MISSIONS_DEMO=<a `missions demo --prepare` directory> \
--     nvim --headless -u NONE -i NONE -l editors/nvim/tests/whole_mission.lua

local bin = assert(os.getenv("MISSIONS_BIN"), "MISSIONS_BIN is not set")
local demo = assert(os.getenv("MISSIONS_DEMO"), "MISSIONS_DEMO is not set")
local DEMO_ITEM = "BACKLOG.md:3"

local plugin = vim.fs.dirname(vim.fs.dirname(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p")))
vim.opt.runtimepath:prepend(plugin)
vim.o.shortmess = vim.o.shortmess .. "F"

local failures = {}
local function check(condition, message)
  if not condition then
    table.insert(failures, message)
  end
  return condition
end

-- The user: picks the demo's backlog item and dismisses the server's own gate prompts, so
-- every gate is passed through the plugin's commands (:MissionApprove, :MissionAccept).
local asked = {}
vim.ui.select = function(items, opts, on_choice)
  local format = opts.format_item or tostring
  local texts = {}
  for i, item in ipairs(items) do
    texts[i] = format(item)
  end
  table.insert(asked, (opts.prompt or "") .. " [" .. table.concat(texts, " | ") .. "]")
  for i, item in ipairs(items) do
    if type(item) == "table" and item.id == DEMO_ITEM then
      return on_choice(item, i)
    end
  end
  on_choice(nil, nil)
end

-- As a user's Neovim would be: filetypes detected (the server attaches on them), started in
-- the project.
vim.cmd("filetype on")
vim.cmd.cd(vim.fn.fnameescape(demo))

local missions = require("missions")
missions.setup({ cmd = { bin, "lsp", "--stdio" } })

local seen_diagnostics = {}
vim.api.nvim_create_autocmd("DiagnosticChanged", {
  callback = function(args)
    for _, diagnostic in ipairs(args.data and args.data.diagnostics or {}) do
      if diagnostic.source == "missions" then
        table.insert(seen_diagnostics, diagnostic)
      end
    end
  end,
})

local statusline_seen = ""
--- Waits until the only mission satisfies `wanted`, noting the statusline on the way.
local function wait_for_mission(what, wanted)
  local ok = vim.wait(120000, function()
    local line = missions.statusline()
    if line ~= "" then
      statusline_seen = line
    end
    local _, snapshot = next(missions.missions)
    return snapshot ~= nil and wanted(snapshot)
  end, 50)
  local _, snapshot = next(missions.missions)
  return check(ok, "the mission never " .. what .. "; state " .. vim.inspect(snapshot and snapshot.state) .. "; asked: " .. vim.inspect(asked))
end

local function waits_for(milestone)
  return function(snapshot)
    if snapshot.state ~= "awaiting_acceptance" or not snapshot.plan or snapshot.plan == vim.NIL then
      return false
    end
    return vim.iter(snapshot.plan.milestones):any(function(m)
      return m.id == milestone and m.status == "validated"
    end)
  end
end

--- The text of the Mission Control buffer, opened with :MissionControl.
local function control_text()
  vim.cmd("MissionControl")
  local control
  vim.wait(10000, function()
    for _, buffer in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_valid(buffer) and vim.api.nvim_buf_get_name(buffer):find("missions://", 1, true) then
        control = buffer
        return true
      end
    end
    return false
  end, 50)
  if not check(control ~= nil, "Mission Control did not open") then
    return nil, ""
  end
  return control, table.concat(vim.api.nvim_buf_get_lines(control, 0, -1, false), "\n")
end

vim.cmd.edit(vim.fn.fnameescape(demo .. "/BACKLOG.md"))
local attached = vim.wait(30000, function()
  local c = vim.lsp.get_clients({ name = "missions", bufnr = 0 })[1]
  return c ~= nil and c.initialized
end, 50)
check(attached, "the server did not attach to BACKLOG.md")

-- Start from the backlog, approve with the command.
vim.cmd("MissionStart")
wait_for_mission("waited for plan approval", function(s)
  return s.state == "awaiting_approval"
end)
local id = next(missions.missions)
vim.cmd("MissionApprove")
wait_for_mission("waited for M1's acceptance", waits_for("M1"))

-- The review's finding, as a diagnostic with its assertion id.
check(
  vim.iter(seen_diagnostics):any(function(d)
    return d.code == "A2" and d.message:find("^A2: The docstring's example") ~= nil
  end),
  "no diagnostic for the review's finding on A2: " .. vim.inspect(seen_diagnostics)
)

-- Hover on a line the first feature wrote.
if id then
  local handoffs = vim.fn.glob(demo .. "/.missions/" .. id .. "/handoffs/*.json", false, true)
  table.sort(handoffs)
  if check(#handoffs > 0, "no handoff was recorded") then
    local handoff = vim.json.decode(table.concat(vim.fn.readfile(handoffs[1]), "\n"))
    local change = handoff.files_changed[1]
    vim.cmd.edit(vim.fn.fnameescape(demo .. "/" .. change.path))
    vim.wait(10000, function()
      return #vim.lsp.get_clients({ name = "missions", bufnr = 0 }) > 0
    end, 50)
    local params = {
      textDocument = vim.lsp.util.make_text_document_params(0),
      position = { line = change.ranges[1][1] - 1, character = 0 },
    }
    local responses = vim.lsp.buf_request_sync(0, "textDocument/hover", params, 10000) or {}
    local text = ""
    for _, response in pairs(responses) do
      if response.result and response.result.contents then
        text = text .. (response.result.contents.value or "")
      end
    end
    check(text:find("Missions", 1, true) and text:find(handoff.feature, 1, true), "hover: " .. text)
  end
end

-- Mission Control at the gate: the open finding, and <CR> on it jumps to its line.
local control, text = control_text()
check(text:find("Open findings (1)", 1, true), "Mission Control at M1's gate:\n" .. text)
if control then
  local lines = vim.api.nvim_buf_get_lines(control, 0, -1, false)
  local row
  for i, line in ipairs(lines) do
    if line:find("textkit/slug.py:5", 1, true) then
      row = i
    end
  end
  if check(row ~= nil, "Mission Control does not list the finding at textkit/slug.py:5:\n" .. text) then
    vim.api.nvim_set_current_win(vim.fn.bufwinid(control))
    vim.api.nvim_win_set_cursor(0, { row, 0 })
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("<CR>", true, false, true), "x", false)
    local jumped = vim.api.nvim_buf_get_name(0)
    check(jumped:find("textkit/slug.py", 1, true) and vim.api.nvim_win_get_cursor(0)[1] == 5, "<CR> went to " .. jumped .. ":" .. vim.api.nvim_win_get_cursor(0)[1])
  end
end

-- A course correction, then accept both milestones with the command.
vim.cmd("MissionCorrect Keep docstrings to one line.")
check(
  vim.wait(10000, function()
    return id ~= nil and table.concat(vim.fn.readfile(demo .. "/.missions/" .. id .. "/events.jsonl"), "\n"):find("Keep docstrings to one line.", 1, true) ~= nil
  end, 50),
  "the course correction was not recorded"
)
vim.cmd("MissionAccept")
wait_for_mission("waited for M2's acceptance", waits_for("M2"))
vim.cmd("MissionAccept")
wait_for_mission("completed", function(s)
  return s.state == "completed"
end)

check(statusline_seen:find("Missions " .. tostring(id), 1, true) ~= nil, "statusline while running: " .. statusline_seen)
local _, final = control_text()
check(final:find("State: completed", 1, true), "Mission Control:\n" .. final)
check(final:find("Milestones", 1, true) and final:find("M1", 1, true), "Mission Control lists no milestones:\n" .. final)
check(final:find("Assertions", 1, true), "Mission Control lists no assertions:\n" .. final)

-- :checkhealth finds the server and the workspace.
vim.cmd.edit(vim.fn.fnameescape(demo .. "/BACKLOG.md"))
vim.cmd("checkhealth missions")
local health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
check(health:find("OK server: ", 1, true) and health:find("OK workspace: ", 1, true), ":checkhealth missions:\n" .. health)

for _, c in ipairs(vim.lsp.get_clients({ name = "missions" })) do
  c:stop()
end
vim.wait(5000, function()
  return #vim.lsp.get_clients({ name = "missions" }) == 0
end, 50)

if #failures > 0 then
  io.stderr:write("FAILED:\n  " .. table.concat(failures, "\n  ") .. "\n")
  os.exit(1)
end
io.stdout:write("ok: a whole mission through the Neovim plugin (" .. tostring(id) .. ")\n")
os.exit(0)
