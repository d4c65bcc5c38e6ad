-- wrk script for bench/run.sh: builds B2C user-flow API connector requests
-- (/work/shared/b2c/api-connector-examples.json shape) and checks every answer.
--
-- wrk -t2 -c32 -d15s --latency -s bench/connector.lua URL -- MODE TAG AUTH CLIENT_ID SIGNIN CUSTOMERS
--
--   MODE       bare    : token-step-shaped body against the bare JSON endpoint; expects Continue.
--              prelink : PreTokenIssuance for objectIds signin-0..SIGNIN-1 (customer<i>@example.com);
--                        expects Linked or AlreadyLinked.
--              signin  : the same requests once linked; expects AlreadyLinked only.
--              signup  : alternates PostAttributeCollection (no objectId) and PreTokenIssuance
--                        with a fresh objectId signup-TAG-t<thread>-<k> for customer emails
--                        SIGNIN..CUSTOMERS-1; expects Continue, and Linked at the token step.
--   TAG        makes sign-up objectIds unique across runs on one database.
--   AUTH       base64 of "user:password" for the Authorization: Basic header.
--
-- A response is bad when its status is not 200, it has no "action":"Continue", it carries
-- extension_AutoLinkError (a refusal at the token step, e.g. ServiceUnavailable), or its outcome
-- is not the one the mode expects. done() prints one machine-readable RESULT line.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "signin"
   tag = args[2] or "x"
   auth = args[3] or ""
   client_id = args[4] or "93fd07aa-333c-409d-955d-96008fd08dd9"
   signin_count = tonumber(args[5] or "10000")
   customer_count = tonumber(args[6] or "100000")
   n = 0
   responses = 0
   bad_status = 0
   bad_body = 0
   linked = 0
   already = 0
   created = 0
   continue_plain = 0
   first_bad = ""
   wrk.method = "POST"
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Basic " .. auth,
   }
end

local function body(email, object_id, step)
   local oid = ""
   if object_id then
      oid = '"objectId":"' .. object_id .. '",'
   end
   return '{"email":"' .. email .. '","identities":[{"signInType":"emailAddress",'
      .. '"issuer":"fabrikam.onmicrosoft.com","issuerAssignedId":"' .. email .. '"}],'
      .. oid .. '"step":"' .. step .. '","client_id":"' .. client_id .. '","ui_locales":"en-US"}'
end

function request()
   local b
   if mode == "signup" then
      local k = math.floor(n / 2)
      local c = signin_count + (tid * 45007 + k) % (customer_count - signin_count)
      local email = "customer" .. c .. "@example.com"
      if n % 2 == 0 then
         b = body(email, nil, "PostAttributeCollection")
      else
         b = body(email, "signup-" .. tag .. "-t" .. tid .. "-" .. k, "PreTokenIssuance")
      end
   else
      -- bare, prelink, signin: walk the pre-linked set; the two threads start apart.
      local i = (tid * 5003 + n) % signin_count
      b = body("customer" .. i .. "@example.com", "signin-" .. i, "PreTokenIssuance")
   end
   n = n + 1
   return wrk.format(nil, nil, headers, b)
end

local function bad(why)
   bad_body = bad_body + 1
   if first_bad == "" then
      first_bad = why
   end
end

function response(status, hdrs, resp)
   responses = responses + 1
   if status ~= 200 then
      bad_status = bad_status + 1
      if first_bad == "" then
         first_bad = "status " .. status .. ": " .. string.sub(resp or "", 1, 300)
      end
      return
   end
   if not string.find(resp, '"action":"Continue"', 1, true) then
      return bad("no Continue: " .. string.sub(resp, 1, 300))
   end
   if string.find(resp, "AutoLinkError", 1, true) then
      return bad("refused: " .. string.sub(resp, 1, 300))
   end
   local outcome = nil
   if string.find(resp, '"extension_AutoLinkOutcome":"Linked"', 1, true) then
      linked = linked + 1
      outcome = "Linked"
   elseif string.find(resp, '"extension_AutoLinkOutcome":"AlreadyLinked"', 1, true) then
      already = already + 1
      outcome = "AlreadyLinked"
   elseif string.find(resp, '"extension_AutoLinkOutcome":"Created"', 1, true) then
      created = created + 1
      outcome = "Created"
   else
      continue_plain = continue_plain + 1
   end
   if mode == "signin" and outcome ~= "AlreadyLinked" then
      bad("expected AlreadyLinked: " .. string.sub(resp, 1, 300))
   elseif mode == "prelink" and outcome ~= "Linked" and outcome ~= "AlreadyLinked" then
      bad("expected Linked or AlreadyLinked: " .. string.sub(resp, 1, 300))
   elseif mode == "signup" and outcome ~= nil and outcome ~= "Linked" then
      bad("expected Linked: " .. string.sub(resp, 1, 300))
   elseif mode == "bare" and outcome ~= nil then
      bad("unexpected outcome from the bare endpoint")
   end
end

function done(summary, latency, requests)
   local t = {
      responses = 0, bad_status = 0, bad_body = 0, linked = 0, already = 0,
      created = 0, continue_plain = 0,
   }
   local first = ""
   for _, thread in ipairs(threads) do
      for k, _ in pairs(t) do
         t[k] = t[k] + (thread:get(k) or 0)
      end
      local fb = thread:get("first_bad") or ""
      if first == "" and fb ~= "" then
         first = fb
      end
   end
   local seconds = summary.duration / 1e6
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write + e.timeout
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f "
         .. "bad_status=%d bad_body=%d socket_errors=%d timeouts=%d linked=%d already=%d created=%d "
         .. "plain_continue=%d links_per_s=%.1f\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000,
      t.bad_status, t.bad_body, socket_errors, e.timeout, t.linked, t.already, t.created,
      t.continue_plain, t.linked / seconds))
   if first ~= "" then
      io.write("FIRST_BAD " .. string.gsub(first, "\n", " ") .. "\n")
   end
end
