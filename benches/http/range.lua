-- 4 KiB ranges at random 4 KiB-aligned offsets of a 64 MiB object.
local n_blocks = 64 * 1024 * 1024 / 4096
request = function()
  local start = math.random(0, n_blocks - 1) * 4096
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. start .. "-" .. (start + 4095) })
end
