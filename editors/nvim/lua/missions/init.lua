-- Missions for Neovim (0.11+): the language server registered for every buffer of a project,
-- commands that act on the current mission without typing its id, a Mission Control buffer
-- that follows `missions/didChange`, and a statusline component. Everything essential also
-- works without this plugin (SPEC §8); it adds pickers and views on top.

local M = {}

local NAME = "missions"

--- The last status snapshot of each mission the server told about, by id.
M.missions = {}

local options = {
  cmd = nil,
  server_path = "missions",
  init_options = nil,
}

local function notify(message, level)
  vim.notify("Missions: " .. message, level or vim.log.levels.INFO)
end

--- The Missions client of the current buffer's project, if one runs.
local function client()
  local clients = vim.lsp.get_clients({ name = NAME, bufnr = 0 })
  if #clients == 0 then
    clients = vim.lsp.get_clients({ name = NAME })
  end
  return clients[1]
end

--- Runs a `missions.*` command (SPEC §8) with one object argument; `done(result)` on success.
local function execute(command, argument, done)
  local c = client()
  if not c then
    notify("the language server is not running in this project (see :checkhealth missions)", vim.log.levels.ERROR)
    return
  end
  -- An empty table would be sent as a JSON array; commands take one object.
  local params = { command = command, arguments = { next(argument or {}) and argument or vim.empty_dict() } }
  c:request("workspace/executeCommand", params, function(err, result)
    if err then
      notify(err.message or vim.inspect(err), vim.log.levels.ERROR)
    elseif done then
      done(result)
    end
  end)
end
M.execute = execute

local terminal = { completed = true, failed = true, cancelled = true }

--- Asks the server for every mission, remembers them, and calls `done(snapshots)`.
local function refresh(done)
  execute("missions.status", {}, function(snapshots)
    for _, snapshot in ipairs(snapshots or {}) do
      M.missions[snapshot.id] = snapshot
    end
    if done then
      done(snapshots or {})
    end
  end)
end

--- Calls `done(snapshot)` with the mission a command acts on: the only one that `wanted`
--- accepts, or the user's pick when several do.
local function with_mission(wanted, what, done)
  refresh(function(snapshots)
    local candidates = {}
    for _, snapshot in ipairs(snapshots) do
      if wanted(snapshot) then
        table.insert(candidates, snapshot)
      end
    end
    if #candidates == 0 then
      notify("no mission " .. what, vim.log.levels.WARN)
    elseif #candidates == 1 then
      done(candidates[1])
    else
      vim.ui.select(candidates, {
        prompt = "Mission",
        format_item = function(s)
          return string.format("%s  %s  (%s)", s.id, s.title, s.state)
        end,
      }, function(choice)
        if choice then
          done(choice)
        end
      end)
    end
  end)
end

local function live(snapshot)
  return not terminal[snapshot.state]
end

--- The milestone of `snapshot` that waits for acceptance.
local function waiting_milestone(snapshot)
  if snapshot.state ~= "awaiting_acceptance" or not snapshot.plan then
    return nil
  end
  for _, milestone in ipairs(snapshot.plan.milestones) do
    if milestone.status == "validated" then
      return milestone
    end
  end
end

local function start_from_backlog()
  execute("missions.backlog", {}, function(items)
    if not items or #items == 0 then
      notify("the backlog is empty: add `- [ ] …` items to BACKLOG.md or TODO.md, or TODO comments in the code")
      return
    end
    -- Grouped by source, each with where it lives.
    table.sort(items, function(a, b)
      if a.source ~= b.source then
        return a.source < b.source
      end
      return a.id < b.id
    end)
    vim.ui.select(items, {
      prompt = "Start a mission from",
      format_item = function(item)
        local where = item.location and string.format("  (%s:%d)", item.location.path, item.location.line) or ""
        return string.format("[%s] %s%s", item.source, item.title, where)
      end,
    }, function(item)
      if item then
        execute("missions.start", { itemId = item.id }, function(result)
          notify("mission " .. result.missionId .. " started: " .. item.title)
        end)
      end
    end)
  end)
end

local function start_from_text(text)
  local function start(value)
    if value and vim.trim(value) ~= "" then
      execute("missions.start", { text = value }, function(result)
        notify("mission " .. result.missionId .. " started")
      end)
    end
  end
  if text and text ~= "" then
    start(text)
  else
    vim.ui.input({ prompt = "Mission: " }, start)
  end
end

local function control(command, wanted, what, extra)
  with_mission(wanted, what, function(snapshot)
    local argument = { missionId = snapshot.id }
    for key, value in pairs(extra or {}) do
      argument[key] = value
    end
    execute(command, argument, function()
      notify(command:gsub("^missions%.", "") .. " " .. snapshot.id)
    end)
  end)
end

--- One line for a statusline: the mission, its state, and where it is.
function M.statusline()
  local best
  for _, snapshot in pairs(M.missions) do
    if live(snapshot) and (not best or snapshot.updated_at > best.updated_at) then
      best = snapshot
    end
  end
  if not best then
    return ""
  end
  local where = ""
  if best.current then
    where = table.concat(vim.tbl_filter(function(part)
      return part ~= nil and part ~= vim.NIL
    end, { best.current.milestone, best.current.feature }), "·")
  end
  local state = best.interrupted and "interrupted" or best.state
  return string.format("Missions %s %s%s", best.id, state, where ~= "" and (" " .. where) or "")
end

--- The lines of Mission Control for one snapshot, and the finding under each line.
local function render(snapshot)
  local lines, targets = {}, {}
  local function add(line, target)
    -- A buffer line holds no line break; multi-line text (a detail, a description) is joined.
    table.insert(lines, (line:gsub("\r?\n", " ⏎ ")))
    targets[#lines] = target
  end
  add(string.format("Mission %s — %s", snapshot.id, snapshot.title))
  local state = snapshot.interrupted and "interrupted" or snapshot.state
  if snapshot.pause_reason and snapshot.pause_reason ~= vim.NIL then
    state = state .. " (" .. snapshot.pause_reason .. ")"
  end
  add("State: " .. state)
  if snapshot.detail and snapshot.detail ~= vim.NIL then
    add("  " .. snapshot.detail)
  end
  local budget = snapshot.budget or {}
  add(string.format("Budget: %d tokens, $%.2f", budget.used_tokens or 0, budget.used_usd or 0))
  if snapshot.active_run and snapshot.active_run ~= vim.NIL then
    local run = snapshot.active_run
    local where = (run.feature ~= vim.NIL and run.feature) or (run.milestone ~= vim.NIL and run.milestone) or ""
    local line = string.format("Running: %s %s", run.role, where)
    if run.model and run.model ~= vim.NIL then
      line = line .. " on " .. run.model
    end
    if run.tool and run.tool ~= vim.NIL then
      line = line .. " — " .. run.tool
    end
    add(line)
  end
  add("")
  if snapshot.plan and snapshot.plan ~= vim.NIL then
    add("Milestones")
    for _, milestone in ipairs(snapshot.plan.milestones) do
      add(string.format("  %s %s (%s)", milestone.id, milestone.title, milestone.status))
      for _, feature in ipairs(milestone.features) do
        add(string.format("    %s %s (%s)", feature.id, feature.title, feature.status))
      end
    end
    add("")
  end
  local assertions = snapshot.contract and snapshot.contract.assertions or {}
  if #assertions > 0 then
    add("Assertions")
    for _, assertion in ipairs(assertions) do
      add(string.format("  %s [%s] %s", assertion.id, assertion.status, assertion.description))
    end
    add("")
  end
  add(string.format("Open findings (%d)%s", #(snapshot.findings or {}), #(snapshot.findings or {}) > 0 and " — <CR> jumps" or ""))
  for _, finding in ipairs(snapshot.findings or {}) do
    local place = ""
    if finding.path then
      place = " " .. finding.path .. (finding.line and (":" .. finding.line) or "")
    end
    local first_line = vim.split(finding.message, "\n")[1]
    add(string.format("  %s %s %s%s: %s", finding.id, finding.severity, finding.validator, place, first_line), finding)
  end
  return lines, targets
end

local control_buffers = {}

local function draw(buffer)
  local view = control_buffers[buffer]
  local snapshot = view and M.missions[view.mission]
  if not snapshot or not vim.api.nvim_buf_is_valid(buffer) then
    return
  end
  local lines, targets = render(snapshot)
  view.targets = targets
  vim.bo[buffer].modifiable = true
  vim.api.nvim_buf_set_lines(buffer, 0, -1, false, lines)
  vim.bo[buffer].modifiable = false
end

local function open_control(snapshot)
  local name = "missions://" .. snapshot.id
  -- Asked again for the same mission: show the buffer already open.
  local existing = vim.fn.bufnr(name)
  if existing ~= -1 and control_buffers[existing] then
    local window = vim.fn.bufwinid(existing)
    if window ~= -1 then
      vim.api.nvim_set_current_win(window)
    else
      vim.cmd("botright split")
      vim.api.nvim_win_set_buf(0, existing)
    end
    draw(existing)
    return existing
  end
  local buffer = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(buffer, name)
  vim.bo[buffer].bufhidden = "wipe"
  vim.bo[buffer].filetype = "missions"
  control_buffers[buffer] = { mission = snapshot.id, root = client() and client().root_dir }
  vim.api.nvim_create_autocmd("BufWipeout", {
    buffer = buffer,
    callback = function()
      control_buffers[buffer] = nil
    end,
  })
  vim.keymap.set("n", "<CR>", function()
    local view = control_buffers[buffer]
    local finding = view and view.targets and view.targets[vim.api.nvim_win_get_cursor(0)[1]]
    if finding and finding.path then
      local path = view.root and (view.root .. "/" .. finding.path) or finding.path
      vim.cmd("wincmd p")
      vim.cmd.edit(vim.fn.fnameescape(path))
      vim.api.nvim_win_set_cursor(0, { math.max(finding.line or 1, 1), 0 })
    end
  end, { buffer = buffer, desc = "Missions: jump to the finding" })
  vim.cmd("botright split")
  vim.api.nvim_win_set_buf(0, buffer)
  draw(buffer)
  return buffer
end

--- `missions/didChange`: remember the snapshot and redraw what shows it.
local function did_change(_, snapshot)
  if type(snapshot) ~= "table" or not snapshot.id then
    return
  end
  M.missions[snapshot.id] = snapshot
  for buffer, view in pairs(control_buffers) do
    if view.mission == snapshot.id then
      draw(buffer)
    end
  end
  vim.cmd.redrawstatus({ bang = true })
end

local function commands()
  local function command(name, fn, opts)
    vim.api.nvim_create_user_command(name, fn, opts or {})
  end
  command("MissionStart", start_from_backlog, { desc = "Missions: start a mission from the backlog" })
  command("MissionStartText", function(args)
    local text = args.args
    if args.range > 0 then
      text = table.concat(vim.api.nvim_buf_get_lines(0, args.line1 - 1, args.line2, false), "\n")
    end
    start_from_text(text)
  end, { nargs = "*", range = true, desc = "Missions: start a mission from text or the selection" })
  command("MissionApprove", function()
    control("missions.approvePlan", function(s)
      return s.state == "awaiting_approval"
    end, "waits for plan approval")
  end)
  command("MissionAccept", function()
    with_mission(waiting_milestone, "waits for acceptance", function(snapshot)
      local milestone = waiting_milestone(snapshot)
      execute("missions.acceptMilestone", { missionId = snapshot.id, milestoneId = milestone.id }, function()
        notify("accepted " .. milestone.id .. " of " .. snapshot.id)
      end)
    end)
  end)
  command("MissionReject", function()
    with_mission(waiting_milestone, "waits for acceptance", function(snapshot)
      local milestone = waiting_milestone(snapshot)
      vim.ui.input({ prompt = "What should change in " .. milestone.id .. "? " }, function(feedback)
        if feedback and vim.trim(feedback) ~= "" then
          local argument = { missionId = snapshot.id, milestoneId = milestone.id, feedback = feedback }
          execute("missions.rejectMilestone", argument, function()
            notify("rejected " .. milestone.id .. " of " .. snapshot.id)
          end)
        end
      end)
    end)
  end)
  command("MissionRollback", function()
    -- Any mission but a completed or cancelled one may go back (a failed one too).
    local function may_roll_back(s)
      return s.state ~= "completed" and s.state ~= "cancelled"
    end
    with_mission(may_roll_back, "to roll back", function(snapshot)
      local started = vim.tbl_filter(function(m)
        return m.status ~= "pending"
      end, snapshot.plan and snapshot.plan.milestones or {})
      vim.ui.select(started, {
        prompt = "Roll back to the start of",
        format_item = function(m)
          return m.id .. " " .. m.title
        end,
      }, function(milestone)
        if milestone then
          execute("missions.rollback", { missionId = snapshot.id, milestoneId = milestone.id }, function()
            notify("rolled back " .. snapshot.id .. " to the start of " .. milestone.id)
          end)
        end
      end)
    end)
  end)
  command("MissionPause", function()
    control("missions.pause", function(s)
      return live(s) and s.state ~= "paused"
    end, "to pause")
  end)
  command("MissionResume", function()
    control("missions.resume", function(s)
      return s.state == "paused" or s.interrupted
    end, "to resume")
  end)
  command("MissionCancel", function()
    control("missions.cancel", live, "to cancel")
  end)
  command("MissionCorrect", function(args)
    local function send(note)
      if note and vim.trim(note) ~= "" then
        control("missions.courseCorrect", live, "to correct", { note = note })
      end
    end
    if args.args ~= "" then
      send(args.args)
    else
      vim.ui.input({ prompt = "Course correction: " }, send)
    end
  end, { nargs = "*" })
  command("MissionStatus", function()
    refresh(function(snapshots)
      if #snapshots == 0 then
        notify("no missions in this workspace")
      end
      for _, s in ipairs(snapshots) do
        notify(string.format("%s %s — %s, %d open finding(s)", s.id, s.title, s.interrupted and "interrupted" or s.state, #(s.findings or {})))
      end
    end)
  end)
  command("MissionControl", function()
    with_mission(function()
      return true
    end, "in this workspace", open_control)
  end)
end

--- Registers the server for every buffer of a project (root markers `.missions`, `.git`) and
--- defines the commands. `opts.server_path` (default `missions` on PATH) or `opts.cmd` starts
--- the server; `opts.init_options` are its settings (SPEC §7 keys under `missions`).
function M.setup(opts)
  options = vim.tbl_extend("force", options, opts or {})
  vim.lsp.config(NAME, {
    cmd = options.cmd or { options.server_path, "lsp", "--stdio" },
    root_markers = { ".missions", ".git" },
    init_options = options.init_options,
    handlers = { ["missions/didChange"] = did_change },
  })
  vim.lsp.enable(NAME)
  commands()
end

M.render = render

return M
