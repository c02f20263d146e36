-- wrk script: rotate through the request paths listed one per line in $WRK_PATHS, and
-- print a machine-readable summary line ("WRKJSON {...}") when done.
-- $WRK_RATE (optional, requests/s over all connections) adds a per-connection pause
-- after each response, approximating a fixed offered load: wrk 4 has no -R (that is
-- wrk2), so this is closed-loop pacing, and latency is measured from each send.
local paths = {}

local counter = 0
local pause_ms = nil  -- per-connection pause, set in init once the connection count is known
local rate = tonumber(os.getenv("WRK_RATE") or "")
local thread_conns = tonumber(os.getenv("WRK_CONNS_PER_THREAD") or "")

function init(args)
  -- formatted here, not at load: wrk sets the Host header just before init()
  local f = assert(io.open(os.getenv("WRK_PATHS") or "paths.txt"))
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = wrk.format("GET", line) end
  end
  f:close()
  assert(#paths > 0, "no paths")
  -- start each thread (and so each connection group) at a different place
  counter = math.random(#paths)
  if rate and thread_conns then
    pause_ms = 1000.0 * thread_conns * tonumber(os.getenv("WRK_THREADS") or "1") / rate
  end
end

function request()
  counter = counter % #paths + 1
  return paths[counter]
end

if rate then
  function delay()
    -- wrk takes whole milliseconds: dither between floor and ceil to keep the mean right
    local base = math.floor(pause_ms)
    if math.random() < pause_ms - base then return base + 1 end
    return base
  end
end

-- done(): the summary line, from summary.lua beside this script.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")
