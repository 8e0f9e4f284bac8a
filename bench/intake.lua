-- wrk script for bench/intake.py: POST pre-signed, unique webhook deliveries.
--
-- Usage: wrk -t T -c C -d D -s bench/intake.lua URL -- POOL_FILE T
--
-- POOL_FILE holds one delivery per line: "id<TAB>timestamp<TAB>signature<TAB>body",
-- signed by bench/intake.py just before the run (timestamps are within the
-- service's tolerance, every id is unique). Thread k of T takes lines k, k+T,
-- k+2T... and builds every HTTP request once in init(), so the measured loop
-- only hands out prepared strings. A thread that runs out of lines starts
-- again from its first one and counts how many it re-sent ("wrapped"); those
-- are duplicates, and intake.py refuses a run that has any.
--
-- done() prints one line "RESULT {json}" with the totals and latency percentiles.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("index", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local path, threads_total = args[1], tonumber(args[2])
   prepared = {}
   sent = 0
   wrapped = 0
   local file = assert(io.open(path, "r"))
   local line_number = 0
   for line in file:lines() do
      if line_number % threads_total == index then
         local id, timestamp, signature, body =
            string.match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         prepared[#prepared + 1] = wrk.format("POST", "/webhooks/batch-completed", {
            ["webhook-id"] = id,
            ["webhook-timestamp"] = timestamp,
            ["webhook-signature"] = signature,
            ["Content-Type"] = "application/json",
         }, body)
      end
      line_number = line_number + 1
   end
   file:close()
   pool_size = #prepared
   assert(pool_size > 0, "no deliveries for thread " .. index)
end

function request()
   sent = sent + 1
   if sent > #prepared then
      wrapped = wrapped + 1
      return prepared[((sent - 1) % #prepared) + 1]
   end
   return prepared[sent]
end

function done(summary, latency, requests)
   local wrapped_total, pool = 0, 0
   for _, thread in ipairs(threads) do
      wrapped_total = wrapped_total + thread:get("wrapped")
      pool = pool + thread:get("pool_size")
   end
   local errors = summary.errors
   io.write(string.format(
      'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
      '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"wrapped":%d,"pool":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, wrapped_total, pool))
end
