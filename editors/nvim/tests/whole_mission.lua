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

-- The user: picks the demo's backlog item, approves the plan, accepts every milestone, and
-- says nothing else (a pause would not be resumed).
local asked = {}
vim.ui.select = function(items, opts, on_choice)
  local format = opts.format_item or tostring
  local texts = {}
  for i, item in ipairs(items) do
    texts[i] = format(item)
  end
  table.insert(asked, (opts.prompt or "") .. " [" .. table.concat(texts, " | ") .. "]")
  for i, item in ipairs(items) do
    if texts[i] == "Approve" or texts[i] == "Accept" or (type(item) == "table" and item.id == DEMO_ITEM) then
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

vim.cmd.edit(vim.fn.fnameescape(demo .. "/BACKLOG.md"))
local attached = vim.wait(30000, function()
  local c = vim.lsp.get_clients({ name = "missions", bufnr = 0 })[1]
  return c ~= nil and c.initialized
end, 50)
check(attached, "the server did not attach to BACKLOG.md")

vim.cmd("MissionStart")
check(
  vim.wait(60000, function()
    return next(missions.missions) ~= nil
  end, 50),
  "no mission started within a minute; asked: " .. vim.inspect(asked)
)

local statusline_seen = ""
local finished = #failures == 0 and vim.wait(300000, function()
  local line = missions.statusline()
  if line ~= "" then
    statusline_seen = line
  end
  for _, snapshot in pairs(missions.missions) do
    if ({ completed = true, failed = true, cancelled = true, paused = true })[snapshot.state] then
      return true
    end
  end
  return false
end, 100)
check(finished, "the mission did not finish; asked: " .. vim.inspect(asked))

local id, snapshot = next(missions.missions)
check(snapshot and snapshot.state == "completed", "final state: " .. vim.inspect(snapshot and snapshot.state))
check(
  vim.iter(asked):any(function(a)
    return a:find("Approve", 1, true) ~= nil
  end),
  "the plan gate was never asked: " .. vim.inspect(asked)
)
check(
  vim.iter(asked):any(function(a)
    return a:find("Accept", 1, true) ~= nil
  end),
  "no milestone gate was asked: " .. vim.inspect(asked)
)
check(#seen_diagnostics > 0, "no Missions diagnostic was ever published")
check(statusline_seen:find("Missions " .. tostring(id), 1, true) ~= nil, "statusline while running: " .. statusline_seen)

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

-- Mission Control.
vim.cmd("MissionControl")
local control
vim.wait(10000, function()
  for _, buffer in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_get_name(buffer):find("missions://", 1, true) then
      control = buffer
      return true
    end
  end
  return false
end, 50)
if check(control ~= nil, "Mission Control did not open") then
  local text = table.concat(vim.api.nvim_buf_get_lines(control, 0, -1, false), "\n")
  check(text:find("State: completed", 1, true), "Mission Control:\n" .. text)
  check(text:find("Milestones", 1, true) and text:find("M1", 1, true), "Mission Control lists no milestones:\n" .. text)
  check(text:find("Assertions", 1, true), "Mission Control lists no assertions:\n" .. text)
end

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
