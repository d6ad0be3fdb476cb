-- Whole GETs of 1 KiB objects picked at random among 1,000 (paths /api/v1/object/small/kN).
local n_objects = 1000
request = function()
  return wrk.format("GET", "/api/v1/object/small/k" .. math.random(0, n_objects - 1))
end
