-- The set-up in docs/editors/neovim.md "Without the plugin", run as written in a real headless
-- Neovim: the first Lua block of that section is executed, a file of the demo project is
-- opened, and the server must attach with the project as its root and answer
-- `missions.backlog` called the way the page shows (an empty object argument).
--
-- Run by scripts/test with `missions` on PATH:
--   MISSIONS_DEMO=<a `missions demo --prepare` directory> \
--     nvim --headless -u NONE -i NONE -l editors/nvim/tests/docs_snippet.lua

local demo = assert(os.getenv("MISSIONS_DEMO"), "MISSIONS_DEMO is not set")
local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p")
local page = vim.fs.joinpath(vim.fs.dirname(here), "../../../docs/editors/neovim.md")

local function fail(message)
  io.stderr:write("FAILED: " .. message .. "\n")
  os.exit(1)
end

-- The first ```lua block after "## Without the plugin".
local text = table.concat(vim.fn.readfile(vim.fs.normalize(page)), "\n")
local section = text:match("## Without the plugin(.*)") or fail("no 'Without the plugin' section in " .. page)
local snippet = section:match("```lua\n(.-)```") or fail("no Lua block in the section")

vim.cmd("filetype on")
vim.cmd.cd(vim.fn.fnameescape(demo))
local run, problem = load(snippet, "docs/editors/neovim.md")
if not run then
  fail("the snippet does not parse: " .. tostring(problem))
end
run()

vim.cmd.edit(vim.fn.fnameescape(demo .. "/BACKLOG.md"))
local attached = vim.wait(30000, function()
  local client = vim.lsp.get_clients({ name = "missions", bufnr = 0 })[1]
  return client ~= nil and client.initialized
end, 50)
if not attached then
  fail("the server did not attach to BACKLOG.md")
end
local client = vim.lsp.get_clients({ name = "missions", bufnr = 0 })[1]
if vim.fs.normalize(client.root_dir) ~= vim.fs.normalize(vim.fn.resolve(demo)) then
  fail("root " .. tostring(client.root_dir) .. ", expected " .. demo)
end
local response = client:request_sync(
  "workspace/executeCommand",
  { command = "missions.backlog", arguments = { vim.empty_dict() } },
  10000
)
local items = response and response.result or {}
local found = vim.iter(items):any(function(item)
  return item.id == "BACKLOG.md:3"
end)
if not found then
  fail("missions.backlog answered " .. vim.inspect(response))
end
client:stop()
vim.wait(5000, function()
  return #vim.lsp.get_clients({ name = "missions" }) == 0
end, 50)
io.stdout:write("ok: the Neovim set-up of docs/editors/neovim.md works as written\n")
os.exit(0)
