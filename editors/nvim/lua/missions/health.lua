-- `:checkhealth missions`: whether the server is found and runs, the workspace it would serve,
-- and whether a Missions client runs for the current buffer.

local M = {}

function M.check()
  vim.health.start("missions")
  local config = vim.lsp.config.missions
  local cmd = config and config.cmd
  if type(cmd) ~= "table" or not cmd[1] then
    vim.health.error("not set up: call require('missions').setup() in your configuration")
    return
  end
  local server = cmd[1]
  if vim.fn.executable(server) == 0 then
    vim.health.error(
      "server `" .. server .. "` not found",
      { "install it (see the README), or pass setup({ server_path = '/path/to/missions' })" }
    )
    return
  end
  local version = vim.system({ server, "--version" }, { text = true }):wait()
  if version.code == 0 then
    vim.health.ok("server: " .. vim.fn.exepath(server) .. " (" .. vim.trim(version.stdout) .. ")")
  else
    vim.health.error("`" .. server .. " --version` failed: " .. vim.trim(version.stderr or ""))
  end
  local root = vim.fs.root(0, { ".missions", ".git" })
  if root then
    vim.health.ok("workspace: " .. root)
    local doctor = vim.system({ server, "doctor", "--workspace", root }, { text = true }):wait()
    local report = vim.trim((doctor.stdout or "") .. (doctor.stderr or ""))
    if doctor.code == 0 then
      vim.health.ok("`missions doctor`: " .. report:gsub("\n", "; "))
    else
      vim.health.warn("`missions doctor` found problems: " .. report:gsub("\n", "; "))
    end
  else
    vim.health.warn("this buffer is not in a project (no .missions or .git above it)")
  end
  if #vim.lsp.get_clients({ name = "missions", bufnr = 0 }) > 0 then
    vim.health.ok("the language server runs for this buffer")
  else
    vim.health.info("no Missions client for this buffer (it attaches to files with a filetype in a project)")
  end
end

return M
