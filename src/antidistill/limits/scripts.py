"""The Lua scripts of RedisLimiter: the rule of ``bucket.py`` (share 1), applied atomically.

One hash per subject, ``<prefix>:<subject>`` = {r: used requests, k: used tokens, t: last update (µs)}.
Its TTL is the time until both have drained to 0, plus 1 s; an expired key means exactly "fresh", so
nothing leaks and idle subjects cost nothing. A subject that drains to 0 is deleted.
Time is Redis's own ``TIME`` (one clock for all replicas) unless the caller passes one (tests).
Floats travel as ``%.17g`` strings (Lua integers replies would truncate them).
"""

from __future__ import annotations

_COMMON = """
local EPS = 1e-6
local function fmt(x) return string.format('%.17g', x) end
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- usage drained up to now; a later stored time (a replica with a clock ahead) is kept, never rewound
local function load(key, now, period, lr, lk)
  local h = redis.call('HMGET', key, 'r', 'k', 't')
  local ur = tonumber(h[1]) or 0
  local uk = tonumber(h[2]) or 0
  local t = tonumber(h[3]) or now
  local el = math.max(now - t, 0)
  if lr > 0 then ur = math.max(0, ur - el * lr / period) else ur = 0 end
  if lk > 0 then uk = math.max(0, uk - el * lk / period) else uk = 0 end
  return ur, uk, math.max(t, now)
end
local function store(key, ur, uk, t, period, lr, lk)
  local drain = 0
  if lr > 0 then drain = ur * period / lr end
  if lk > 0 then drain = math.max(drain, uk * period / lk) end
  if drain <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'r', fmt(ur), 'k', fmt(uk), 't', fmt(t))
  redis.call('PEXPIRE', key, math.ceil(drain / 1000) + 1000)
end
local key = KEYS[1]
local now = clock(ARGV[1])
local period = tonumber(ARGV[2])
local lr = tonumber(ARGV[3])
local lk = tonumber(ARGV[4])
local ur, uk, t = load(key, now, period, lr, lk)
"""

RESERVE = (
    _COMMON
    + """
-- ARGV: now_us ('' = server time), period_us, rpm (0 = none), tpm (0 = none), tokens
local n = tonumber(ARGV[5])
local ok = 1
if lr > 0 and ur + 1 > lr + EPS then ok = 0 end
if lk > 0 and (n > lk or uk + n > lk + EPS) then ok = 0 end
if ok == 1 then
  if lr > 0 then ur = ur + 1 end
  if lk > 0 then uk = uk + n end
  store(key, ur, uk, t, period, lr, lk)
end
return {ok, fmt(ur), fmt(uk)}
"""
)

ADJUST = (
    _COMMON
    + """
-- ARGV: now_us, period_us, rpm, tpm, d_requests, d_tokens (no limit check; never below 0)
if lr > 0 then ur = math.max(0, ur + tonumber(ARGV[5])) end
if lk > 0 then uk = math.max(0, uk + tonumber(ARGV[6])) end
store(key, ur, uk, t, period, lr, lk)
return {fmt(ur), fmt(uk)}
"""
)
