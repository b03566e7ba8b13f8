-- One wrk script for every HTTP case of the benchmark (bench/run.py drives it).
--
--   wrk -t1 -c32 -d10s -s bench/wrk.lua http://127.0.0.1:PORT/graphql -- MODE CONFIG NONCE
--
-- MODE    typename | award | balance | purchase | alliance | exchange | reserve
-- CONFIG  a file written by bench/run.py:
--           typename: one line, a bearer token (a merchant client's)
--           award, purchase: one line per merchant: TOKEN <tab> FIRST_MEMBERSHIP_ID <tab> LAST_MEMBERSHIP_ID
--           balance, alliance:  one line per member token
--           exchange: one line per member: TOKEN <tab> FROM_MEMBERSHIP_ID <tab> TO_MEMBERSHIP_ID
--           reserve:  TOKEN <tab> REWARD_GLOBAL_ID, then one membership id per line
-- NONCE   makes idempotency keys unique across wrk invocations (warm-up, cases, profile)
--
-- Every response is checked (non-2xx, GraphQL "errors", non-empty "userErrors", missing
-- expected field); done() prints one line "BENCH_JSON {...}" with counts, latency
-- percentiles (microseconds, from wrk's histogram) and a few sample bodies.

local TYPENAME_BODY = '{"query":"{ __typename }"}'
local BALANCE_BODY = '{"query":"{ viewer { membership { balance { points held } } } }"}'
local ALLIANCE_BODY = '{"query":"{ allianceBalances { totalValue expiringPoints'
  .. ' lines { edges { node { programName points value expiringPoints } } } } }"}'
local AWARD_PREFIX = '{"query":"mutation Award($input: MovePointsInput!) { awardPoints(input: $input)'
  .. ' { entry { id points balanceAfter createdAt } replayed userErrors { code message field } } }",'
  .. '"variables":{"input":{"membershipId":"'
local PURCHASE_PREFIX = '{"query":"mutation Purchase($input: RecordPurchaseInput!) { recordPurchase(input: $input)'
  .. ' { entry { id points balanceAfter } breakdown { points } replayed userErrors { code message field } } }",'
  .. '"variables":{"input":{"membershipId":"'
local EXCHANGE_PREFIX = '{"query":"mutation Exchange($input: ExchangePointsInput!) { exchangePoints(input: $input)'
  .. ' { exchange { id pointsOut } fromBalance toBalance replayed userErrors { code message field } } }",'
  .. '"variables":{"input":{"fromMembershipId":"'
local RESERVE_PREFIX = '{"query":"mutation Reserve($input: ReserveRewardInput!) { reserveReward(input: $input)'
  .. ' { redemption { id status points } replayed userErrors { code message field } } }",'
  .. '"variables":{"input":{"membershipId":"'
local EXPECTED = {
  exchange = '"pointsOut":',
  typename = '"__typename":"Query"',
  award = '"balanceAfter":',
  balance = '"points":',
  alliance = '"totalValue":',
  purchase = '"balanceAfter":',
  reserve = '"status":"RESERVED"',
}

-- ---------------------------------------------------------------- main state
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

-- ---------------------------------------------------------------- thread state
local mode, nonce, expected
local fixed = {}      -- pre-built requests (typename, balance)
local merchants = {}  -- award: { headers, lo, hi }
local exchangers = {} -- exchange: { headers, from, to }
local reserve = { headers = nil, reward = nil, memberships = {} }  -- reserve
local counter = 0
checked, non2xx, graphql_errors, user_errors, unexpected = 0, 0, 0, 0, 0
sample_ok, sample_error = "", ""

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  local floor = math.floor
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = floor(n / 262144) % 64
    local c2 = floor(n / 4096) % 64
    local c3 = floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
      .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

local function headers_for(token)
  return {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

local function split_tabs(line)
  local fields = {}
  for field in line:gmatch("[^\t]+") do fields[#fields + 1] = field end
  return fields
end

function init(args)
  mode, nonce = args[1], args[3]
  expected = EXPECTED[mode]
  if expected == nil then error("unknown mode " .. tostring(mode)) end
  math.randomseed(os.time() * 1000 + (thread_no or 1) * 7919 + (tonumber(nonce:match("%d+$")) or 0))
  for line in io.lines(args[2]) do
    if #line > 0 then
      if mode == "reserve" then
        if reserve.headers == nil then
          local f = split_tabs(line)
          reserve.headers, reserve.reward = headers_for(f[1]), f[2]
        else
          reserve.memberships[#reserve.memberships + 1] = tonumber(line)
        end
      elseif mode == "award" or mode == "purchase" then
        local f = split_tabs(line)
        merchants[#merchants + 1] = { headers = headers_for(f[1]), lo = tonumber(f[2]), hi = tonumber(f[3]) }
      elseif mode == "exchange" then
        local f = split_tabs(line)
        exchangers[#exchangers + 1] = { headers = headers_for(f[1]), from = f[2], to = f[3] }
      elseif mode == "typename" then
        fixed[#fixed + 1] = wrk.format("POST", nil, headers_for(line), TYPENAME_BODY)
      elseif mode == "alliance" then
        fixed[#fixed + 1] = wrk.format("POST", nil, headers_for(line), ALLIANCE_BODY)
      else
        fixed[#fixed + 1] = wrk.format("POST", nil, headers_for(line), BALANCE_BODY)
      end
    end
  end
  if #fixed == 0 and #merchants == 0 and #exchangers == 0 and #reserve.memberships == 0 then
    error("empty config " .. args[2])
  end
end

function request()
  if mode == "exchange" then
    counter = counter + 1
    local x = exchangers[math.random(#exchangers)]
    local body = EXCHANGE_PREFIX .. base64("Membership:" .. x.from)
      .. '","toMembershipId":"' .. base64("Membership:" .. x.to)
      .. '","points":' .. math.random(100, 300)
      .. ',"idempotencyKey":"' .. nonce .. "-" .. thread_no .. "-" .. counter .. '"}}}'
    return wrk.format("POST", nil, x.headers, body)
  end
  if mode == "reserve" then
    counter = counter + 1
    local membership = reserve.memberships[math.random(#reserve.memberships)]
    local body = RESERVE_PREFIX .. base64("Membership:" .. membership)
      .. '","rewardId":"' .. reserve.reward
      .. '","idempotencyKey":"' .. nonce .. "-" .. thread_no .. "-" .. counter .. '"}}}'
    return wrk.format("POST", nil, reserve.headers, body)
  end
  if mode ~= "award" and mode ~= "purchase" then
    return fixed[math.random(#fixed)]
  end
  counter = counter + 1
  local m = merchants[math.random(#merchants)]
  local membership = math.random(m.lo, m.hi)
  if mode == "purchase" then
    -- Three order lines that hit several rules; the amount is their sum.
    local food, wine, gift = math.random(10, 300), math.random(0, 200), math.random(0, 50)
    local body = PURCHASE_PREFIX .. base64("Membership:" .. membership)
      .. '","orderId":"' .. nonce .. "-" .. thread_no .. "-" .. counter
      .. '","amount":"' .. (food + wine + gift) .. '.50","channel":"app","lines":['
      .. '{"sku":"dish","category":"food","amount":"' .. food .. '.50"},'
      .. '{"sku":"bottle","category":"wine","amount":"' .. wine .. '"},'
      .. '{"sku":"card","category":"gift-card","amount":"' .. gift .. '"}]}}}'
    return wrk.format("POST", nil, m.headers, body)
  end
  local body = AWARD_PREFIX .. base64("Membership:" .. membership)
    .. '","points":' .. math.random(1, 500)
    .. ',"reason":"bench award","idempotencyKey":"' .. nonce .. "-" .. thread_no .. "-" .. counter
    .. '"}}}'
  return wrk.format("POST", nil, m.headers, body)
end

function response(status, headers, body)
  checked = checked + 1
  local bad = false
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    bad = true
  elseif body:find('"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
    bad = true
  elseif (mode == "award" or mode == "purchase" or mode == "exchange" or mode == "reserve")
      and not body:find('"userErrors":[]', 1, true) then
    user_errors = user_errors + 1
    bad = true
  elseif not body:find(expected, 1, true) then
    unexpected = unexpected + 1
    bad = true
  end
  if bad then
    if sample_error == "" then sample_error = status .. " " .. body:sub(1, 600) end
  elseif sample_ok == "" then
    sample_ok = status .. " " .. body:sub(1, 600)
  end
end

-- ---------------------------------------------------------------- report
local function json_string(s)
  s = tostring(s or "")
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local totals = { checked = 0, non2xx = 0, graphql_errors = 0, user_errors = 0, unexpected = 0 }
  local ok_sample, error_sample = "", ""
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
    if ok_sample == "" then ok_sample = thread:get("sample_ok") or "" end
    if error_sample == "" then error_sample = thread:get("sample_error") or "" end
  end
  local e = summary.errors
  local parts = {
    '"requests":' .. summary.requests,
    '"duration_us":' .. summary.duration,
    '"bytes":' .. summary.bytes,
    '"socket_errors":{"connect":' .. e.connect .. ',"read":' .. e.read .. ',"write":' .. e.write
      .. ',"timeout":' .. e.timeout .. '}',
    '"status_errors":' .. e.status,
    '"latency_us":{"min":' .. latency.min .. ',"mean":' .. string.format("%.1f", latency.mean)
      .. ',"stdev":' .. string.format("%.1f", latency.stdev) .. ',"max":' .. latency.max
      .. ',"p50":' .. latency:percentile(50) .. ',"p90":' .. latency:percentile(90)
      .. ',"p95":' .. latency:percentile(95) .. ',"p99":' .. latency:percentile(99)
      .. ',"p999":' .. latency:percentile(99.9) .. '}',
  }
  for name, value in pairs(totals) do parts[#parts + 1] = '"' .. name .. '":' .. value end
  parts[#parts + 1] = '"sample_ok":' .. json_string(ok_sample)
  parts[#parts + 1] = '"sample_error":' .. json_string(error_sample)
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
