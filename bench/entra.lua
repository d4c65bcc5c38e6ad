-- wrk script for bench/entra.sh: Microsoft Entra External ID's custom authentication extension
-- calls, with the bearer token Entra sends, and a check of every answer.
--
-- wrk -t2 -c32 -d15s --latency -s bench/entra.lua URL -- MODE TOKEN TENANT CLIENT_ID SIGNIN THREADS
--
--   MODE     prelink : for users i of the thread's share of 0..SIGNIN-1, one after the other
--                      attributeCollectionSubmit (email one-time-code identity
--                      customer<i>@example.com, correlation id corr-<i>) to
--                      /entra/attribute-collection-submit, then tokenIssuanceStart of user
--                      entra-<i> with the same correlation id and mail to
--                      /entra/token-issuance-start; expects continueWithDefaultBehavior, then
--                      Linked or AlreadyLinked. Run it with one connection per thread (THREADS
--                      = wrk's -t), so that each token issuance follows its own submit.
--            signin  : tokenIssuanceStart of users entra-<i> linked already (the measured call),
--                      a new correlation id each; expects AlreadyLinked with an account number.
--   URL      the server's base URL (http://127.0.0.1:PORT).
--
-- A response is bad when its status is not 200, or it lacks the expected action or outcome.
-- done() prints one machine-readable RESULT line (the same fields as bench/connector.lua's).

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "signin"
   token = args[2] or ""
   tenant = args[3] or ""
   client_id = args[4] or "93fd07aa-333c-409d-955d-96008fd08dd9"
   signin_count = tonumber(args[5] or "10000")
   stride = tonumber(args[6] or "2")
   n = 0
   responses = 0
   bad_status = 0
   bad_body = 0
   linked = 0
   already = 0
   created = 0
   continue_plain = 0
   first_bad = ""
   -- prelink: thread tid walks users tid, tid + STRIDE, ... (STRIDE = wrk's threads, each with
   -- one connection: every user once); set at
   -- the first request, once setup() has given the thread its tid.
   user = nil
   phase = "submit"
   wrk.method = "POST"
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token,
   }
end

local function context(correlation)
   return '"authenticationContext":{"correlationId":"' .. correlation .. '",'
      .. '"client":{"ip":"30.51.176.110","locale":"en-us","market":"en-us"},"protocol":"OAUTH2.0",'
      .. '"clientServicePrincipal":{"id":"3c4d5e6f-0000-4000-8000-000000000001","appId":"' .. client_id
      .. '","appDisplayName":"Fabrikam web","displayName":"Fabrikam web"},'
      .. '"resourceServicePrincipal":{"id":"3c4d5e6f-0000-4000-8000-000000000001","appId":"' .. client_id
      .. '","appDisplayName":"Fabrikam web","displayName":"Fabrikam web"}'
end

local function envelope(event, data)
   return '{"type":"microsoft.graph.authenticationEvent.' .. event .. '",'
      .. '"source":"/tenants/' .. tenant .. '/applications/' .. client_id .. '",'
      .. '"data":{"tenantId":"' .. tenant .. '",'
      .. '"authenticationEventListenerId":"00001111-aaaa-2222-bbbb-3333cccc4444",'
      .. '"customAuthenticationExtensionId":"11112222-bbbb-3333-cccc-4444dddd5555",' .. data .. '}}'
end

local function submit(i)
   local email = "customer" .. i .. "@example.com"
   return envelope("attributeCollectionSubmit",
      '"@odata.type":"microsoft.graph.onAttributeCollectionSubmitCalloutData",'
      .. context("corr-" .. i) .. '},'
      .. '"userSignUpInfo":{"attributes":{"givenName":{"@odata.type":"microsoft.graph.stringDirectoryAttributeValue",'
      .. '"value":"First' .. i .. '","attributeType":"builtIn"}},'
      .. '"identities":[{"signInType":"email","issuer":"contoso.onmicrosoft.com","issuerAssignedId":"' .. email .. '"}]}')
end

local function token_issuance(i, correlation)
   local email = "customer" .. i .. "@example.com"
   return envelope("tokenIssuanceStart",
      '"@odata.type":"microsoft.graph.onTokenIssuanceStartCalloutData",'
      .. context(correlation) .. ',"user":{"displayName":"First' .. i .. '","givenName":"First' .. i
      .. '","id":"entra-' .. i .. '","mail":"' .. email .. '","surname":"Last' .. i
      .. '","userPrincipalName":"' .. email .. '","userType":"Member"}}')
end

-- prelink: a user's token issuance is sent only once its submit was answered, and the next user
-- only once that token issuance was answered (wrk calls request() once more than it sends, on
-- the first thread, to inspect the script: that call must not move the walk on).
function request()
   local path, b
   if user == nil then
      user = tid
   end
   if mode == "prelink" then
      if phase == "token" then
         path, b = "/entra/token-issuance-start", token_issuance(user, "corr-" .. user)
      else
         path, b = "/entra/attribute-collection-submit", submit(user)
      end
   else
      local i = (tid * 5003 + n) % signin_count
      path = "/entra/token-issuance-start"
      b = token_issuance(i, "signin-" .. tid .. "-" .. n)
   end
   n = n + 1
   return wrk.format(nil, path, headers, b)
end

local function bad(why)
   bad_body = bad_body + 1
   if first_bad == "" then
      first_bad = why
   end
end

function response(status, hdrs, resp)
   responses = responses + 1
   local submit_answer = string.find(resp or "", "onAttributeCollectionSubmitResponseData", 1, true)
   if mode == "prelink" then
      if submit_answer then
         phase = "token"
      else
         phase = "submit"
         user = (user + stride) % signin_count
      end
   end
   if status ~= 200 then
      bad_status = bad_status + 1
      if first_bad == "" then
         first_bad = "status " .. status .. ": " .. string.sub(resp or "", 1, 300)
      end
      return
   end
   if submit_answer then
      if mode == "prelink"
         and string.find(resp, "attributeCollectionSubmit.continueWithDefaultBehavior", 1, true) then
         continue_plain = continue_plain + 1
      else
         bad("no continueWithDefaultBehavior: " .. string.sub(resp, 1, 300))
      end
      return
   end
   if not string.find(resp, "tokenIssuanceStart.provideClaimsForToken", 1, true)
      or not string.find(resp, '"customerAccountNumber":"C', 1, true) then
      return bad("no account number: " .. string.sub(resp, 1, 300))
   end
   if string.find(resp, '"autoLinkOutcome":"AlreadyLinked"', 1, true) then
      already = already + 1
   elseif string.find(resp, '"autoLinkOutcome":"Linked"', 1, true) and mode == "prelink" then
      linked = linked + 1
   else
      bad("unexpected outcome: " .. string.sub(resp, 1, 300))
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
