-- One batch of store writes, applied atomically (see batch.rs).
-- KEYS[1]: any key of the prefix (routes the call to the prefix's slot).
-- ARGV: prefix, fence key ('' = none), fence token, marker name, batch
-- id, events MAXLEN, revision history cap, the marker and batch id of
-- the call this one follows ('' = none), the event seq the batch's
-- events follow when the writer numbered them ('' = this script numbers
-- them), then the ops, each as name,
-- argument count, arguments. The marker (`batch:<name>`) remembers the
-- last batch id applied under that name, so a retry is not applied
-- twice. A writer with two calls in flight encodes the second assuming
-- the first applies cleanly; the second checks that it did. Returns
-- {'OK', 'revseq,first,n,new_base,run_seq,event_seq,clean', refused
-- run ids...},
-- {'DUP', same summary} for a batch already applied (a retry after a
-- lost reply), {'STALE'} when the call it follows did not apply
-- cleanly (nothing written), {'RENUMBER'} when events were written
-- since the writer numbered this batch's (nothing written), or
-- {'FENCED'}.
--
-- KEYS[2..]: the keys the commands queued after this call in the same
-- MULTI write (`runs:rec`, `ready` streams): run records travel as plain
-- HSET and XADD, not through Lua, which hashes every byte it is given.
-- A script queued before this call closed them (each moved aside and a
-- string took its place, so those commands fail WRONGTYPE); this call
-- opens them once it knows the batch applies, and one queued after the
-- commands puts back whatever is still closed. Nobody sees the gate: the
-- MULTI runs as one. (Closed until opened, a NOSCRIPT here lets nothing
-- through.)
local GATE = 'multijob:gate'
local gate_open = false
local function open_gate()
  for k = 2, #KEYS do
    redis.call('DEL', KEYS[k])
    if redis.call('EXISTS', KEYS[k] .. ':gated') == 1 then
      redis.call('RENAME', KEYS[k] .. ':gated', KEYS[k])
    end
  end
  gate_open = true
end
local function close_gate()
  for k = 2, #KEYS do
    if redis.call('EXISTS', KEYS[k]) == 1 then
      redis.call('RENAME', KEYS[k], KEYS[k] .. ':gated')
    end
    redis.call('SET', KEYS[k], GATE)
  end
  gate_open = false
end

local function batch()
local P = ARGV[1]
if ARGV[2] ~= '' and redis.call('GET', ARGV[2]) ~= ARGV[3] then
  return {'FENCED'}
end
local marker, batch = P .. 'batch:' .. ARGV[4], ARGV[5] .. '|'
local prev = redis.call('GET', marker)
if prev and string.sub(prev, 1, #batch) == batch then
  return {'DUP', string.sub(prev, #batch + 1)}
end
if ARGV[8] ~= '' then
  local before, want = redis.call('GET', P .. 'batch:' .. ARGV[8]), ARGV[9] .. '|'
  if not before or string.sub(before, 1, #want) ~= want or string.sub(before, -2) ~= ',1' then
    return {'STALE'}
  end
end
-- Events numbered by the writer go as a plain XADD behind the gate.
if ARGV[10] ~= '' and tonumber(redis.call('GET', P .. 'event_seq') or '0') ~= tonumber(ARGV[10]) then
  return {'RENUMBER'}
end
if #KEYS > 1 then open_gate() end
local maxlen, revcap = tonumber(ARGV[6]), tonumber(ARGV[7])
local ACTIVE = {__ACTIVE__}
local FINISHED = {__FINISHED__}
local rev_seq, first_event, n_events = 0, 0, 0
-- 0 when new runs the writer numbered went the careful way: what it
-- assumed for the calls after this one does not hold.
local clean = 1
local refused = {}

-- Counters read once and written back once per batch (the script runs
-- alone, so nobody sees them in between).
local seqs = {}
local function counter(name)
  local c = seqs[name]
  if not c then
    c = {n = tonumber(redis.call('GET', P .. name) or '0'), dirty = false}
    seqs[name] = c
  end
  return c
end
local function next_seq(name)
  local c = counter(name)
  c.n = c.n + 1
  c.dirty = true
  return c.n
end

-- Run count changes, summed per `job\nstatus` and applied at the end;
-- so are the jobs' last slots.
local deltas, delta_order = {}, {}
local slots, slot_order = {}, {}
local function count_field(f, by)
  if not deltas[f] then delta_order[#delta_order + 1] = f; deltas[f] = 0 end
  deltas[f] = deltas[f] + by
end
local function count(job, status, by)
  count_field(job .. '\n' .. status, by)
end
-- (job\nstatus, count) pairs from ARGV[first..last], prepared by the writer.
local function add_counts(first, last)
  for j = first, last, 2 do count_field(ARGV[j], tonumber(ARGV[j + 1])) end
end

-- Writes to run keys, buffered and sent as one variadic command per key
-- (a run appears once per batch, so order within a key does not matter).
-- `flush` runs before anything reads those keys and at the end.
local hsets, zadds, zrems, order = {}, {}, {}, {}
local function buffered(tbl, key)
  local b = tbl[key]
  if not b then
    b = {}
    tbl[key] = b
    order[#order + 1] = {tbl, key}
  end
  return b
end
local function hset(key, field, value)
  local b = buffered(hsets, key); b[#b + 1] = field; b[#b + 1] = value
end
local function zadd(key, score, member)
  local b = buffered(zadds, key); b[#b + 1] = score; b[#b + 1] = member
end
local function zrem(key, member)
  local b = buffered(zrems, key); b[#b + 1] = member
end
local function flush()
  for _, o in ipairs(order) do
    local tbl, key = o[1], o[2]
    local b = tbl[key]
    local cmd = (tbl == hsets and 'HSET') or (tbl == zadds and 'ZADD') or 'ZREM'
    local step = 1000
    for j = 1, #b, step do
      redis.call(cmd, key, unpack(b, j, math.min(j + step - 1, #b)))
    end
  end
  hsets, zadds, zrems, order = {}, {}, {}, {}
end

-- Active runs are indexed in `runs:active` only (a status query for an
-- active status filters it); finished ones in `runs:status:<s>`, written
-- once when the run finishes.
local function index_status(id, seq, was, status)
  if was then
    if ACTIVE[was] then
      if not ACTIVE[status] then zrem(P .. 'runs:active', id) end
    else
      zrem(P .. 'runs:status:' .. was, id)
    end
  end
  if ACTIVE[status] then
    if not (was and ACTIVE[was]) then zadd(P .. 'runs:active', seq, id) end
  else
    zadd(P .. 'runs:status:' .. status, seq, id)
  end
end

-- What the script needs of a stored run (its job, status and run key),
-- read from its record (`runs:rec`), which is the one place a run's
-- status is kept; a run's seq is its score in `runs`. Runs this call
-- writes the careful way are remembered; others are read when needed,
-- a batch's `run` ops in one call up front.
local infos = {}
-- Read from the record's text, not decoded: a layout 5 record opens
-- with `id`, `job_id`, `status` and `run_key` (pinned by
-- `record_text_has_the_fields_the_script_reads` in batch.rs). A layout 4
-- record (one a migration has not reached yet) has `id`, `job_id`,
-- `status`, `trigger` first and its top-level run key in the last
-- `,"run_key":"...","due_at":`. Anything else (an escaped character) is
-- decoded: cjson.decode of an 800-byte record costs about 4 us of
-- Redis's time, and pruning reads one per run.
local function parse_rec(rec)
  if not rec then return nil end
  local job, status, key = string.match(rec,
    '^{"id":"[^"\\]*","job_id":"([^"\\]*)","status":"([^"\\]*)","run_key":"([^"\\]*)",')
  if job then
    return {job = job, status = status, key = key}
  end
  job, status = string.match(rec, '^{"id":"[^"\\]*","job_id":"([^"\\]*)","status":"([^"\\]*)","trigger":')
  local last, at = nil, 1
  while job do
    local s = string.find(rec, ',"run_key":"', at, true)
    if not s then break end
    last, at = s, s + 1
  end
  key = last and string.match(rec, '^,"run_key":"([^"\\]*)","due_at":', last)
  if job and key then
    return {job = job, status = status, key = key}
  end
  local r = cjson.decode(rec)
  return {job = r.job_id, status = r.status, key = r.run_key}
end
local function load_infos(ids)
  for j = 1, #ids, 1000 do
    local chunk = {unpack(ids, j, math.min(j + 999, #ids))}
    local got = redis.call('HMGET', P .. 'runs:rec', unpack(chunk))
    for k, id in ipairs(chunk) do infos[id] = parse_rec(got[k]) or false end
  end
end
local function seq_of(id, m)
  if not m.seq then m.seq = tonumber(redis.call('ZSCORE', P .. 'runs', id)) or 0 end
  return m.seq
end
local function info_of(id)
  local m = infos[id]
  if m == nil then
    m = parse_rec(redis.call('HGET', P .. 'runs:rec', id)) or false
    infos[id] = m
  end
  return m or nil
end

-- `rec` is '' when the record travels outside the script (see KEYS).
local function put_run(id, job, status, key, rec)
  local old = info_of(id)
  if not old then
    -- A second run for the same slot: the first one stands. ('' is a key
    -- naming the run itself: no record means the id is new.)
    local kk = P .. 'runkey:' .. key
    if key ~= '' and not redis.call('SET', kk, id, 'NX') and redis.call('GET', kk) ~= id then
      refused[#refused + 1] = id
      return
    end
    local seq = next_seq('run_seq')
    infos[id] = {seq = seq, job = job, status = status, key = key}
    if rec ~= '' then hset(P .. 'runs:rec', id, rec) end
    if key ~= '' then hset(P .. 'runs:key', id, key) end
    zadd(P .. 'runs', seq, id)
    zadd(P .. 'runs:job:' .. job, seq, id)
    index_status(id, seq, nil, status)
    count(job, status, 1)
    return
  end
  if rec ~= '' then hset(P .. 'runs:rec', id, rec) end
  if old.status ~= status then
    local seq = seq_of(id, old)
    index_status(id, seq, old.status, status)
    count(old.job, old.status, -1)
    count(old.job, status, 1)
    infos[id] = {seq = seq, job = old.job, status = status, key = old.key}
  end
end

-- A variadic command over `args`, 1,000 at a time (a Lua call takes a
-- bounded number of arguments).
local function chunked(cmd, key, args)
  for j = 1, #args, 1000 do
    local part = {unpack(args, j, math.min(j + 999, #args))}
    if key then
      redis.call(cmd, key, unpack(part))
    else
      redis.call(cmd, unpack(part))
    end
  end
end

-- Delete finished runs of `job`: a few variadic commands for the lot,
-- not eight calls a run, and no record read: each is in one status set
-- (ZREM says how many were in which, for the counts), and `runs:key`
-- names the run key of those that hold one.
local function delete_runs(job, ids)
  if #ids == 0 then return end
  local outputs = {}
  for _, id in ipairs(ids) do
    infos[id] = false
    outputs[#outputs + 1] = P .. 'output:' .. id
  end
  for _, status in ipairs(FINISHED) do
    local n = 0
    for j = 1, #ids, 1000 do
      n = n + redis.call('ZREM', P .. 'runs:status:' .. status, unpack(ids, j, math.min(j + 999, #ids)))
    end
    if n > 0 then count(job, status, -n) end
  end
  local keys, owners = {}, {}
  for j = 1, #ids, 1000 do
    local last = math.min(j + 999, #ids)
    local got = redis.call('HMGET', P .. 'runs:key', unpack(ids, j, last))
    for k = 1, last - j + 1 do
      if got[k] then
        keys[#keys + 1] = P .. 'runkey:' .. got[k]
        owners[#owners + 1] = ids[j + k - 1]
      end
    end
  end
  chunked('HDEL', P .. 'runs:key', owners)
  chunked('HDEL', P .. 'runs:rec', ids)
  chunked('UNLINK', nil, outputs)
  chunked('ZREM', P .. 'runs', ids)
  chunked('ZREM', P .. 'runs:job:' .. job, ids)
  -- A run key goes only while it still names the pruned run.
  local stale = {}
  for j = 1, #keys, 1000 do
    local got = redis.call('MGET', unpack(keys, j, math.min(j + 999, #keys)))
    for k = 1, #got do
      if got[k] == owners[j + k - 1] then stale[#stale + 1] = keys[j + k - 1] end
    end
  end
  chunked('DEL', nil, stale)
end

-- Keep the newest `keep` finished runs of a job (active runs are never
-- pruned and do not count): older finished ones go. The candidates are
-- the runs older than the newest `keep`; as many of them are kept as
-- there are active runs among those newest `keep` (the job's active
-- count, stored plus this batch's changes, less the active candidates).
-- Which candidates are active comes from `runs:active` (flushed above);
-- no record is read.
local function prune_runs(job, keep)
  flush()
  local ids = redis.call('ZREVRANGE', P .. 'runs:job:' .. job, keep, -1)
  if #ids == 0 then return end
  local is_active = {}
  for j = 1, #ids, 1000 do
    local got = redis.call('ZMSCORE', P .. 'runs:active', unpack(ids, j, math.min(j + 999, #ids)))
    for k = 1, #got do is_active[j + k - 1] = got[k] and true or false end
  end
  local active = 0
  for status in pairs(ACTIVE) do
    local f = job .. '\n' .. status
    active = active + tonumber(redis.call('HGET', P .. 'run_counts', f) or '0') + (deltas[f] or 0)
  end
  for k = 1, #ids do
    if is_active[k] then active = active - 1 end
  end
  local gone = {}
  for k, id in ipairs(ids) do
    if not is_active[k] then
      if active > 0 then active = active - 1 else gone[#gone + 1] = id end
    end
  end
  delete_runs(job, gone)
end

-- Events are appended in time order: drop everything before the first
-- one at or after `before` (nothing when there is none, as in SQLite).
local function prune_events(before)
  local key, start = P .. 'events', '-'
  while true do
    local page = redis.call('XRANGE', key, start, '+', 'COUNT', 256)
    if #page == 0 then return end
    for _, e in ipairs(page) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'at' then
          if f[j + 1] >= before then
            redis.call('XTRIM', key, 'MINID', e[1])
            return
          end
          break
        end
      end
    end
    start = '(' .. page[#page][1]
  end
end

-- A batch's events are one stream entry `<last id>-<count>` holding them
-- as a JSON array (`e`), with the first one's time (`at`) for pruning.
-- Older entries go by id (MINID): about `maxlen` events are kept. With
-- no `packed`, the entry is a plain XADD after this call: only counted.
local function events(n, at, packed)
  local c = counter('event_seq')
  if first_event == 0 then first_event = c.n + 1 end
  c.n = c.n + n
  c.dirty = true
  n_events = n_events + n
  if not packed then return end
  local id = string.format('%d-%d', c.n, n)
  if c.n > maxlen then
    redis.call('XADD', P .. 'events', 'MINID', '~', c.n - maxlen, id, 'at', at, 'e', packed)
  else
    redis.call('XADD', P .. 'events', id, 'at', at, 'e', packed)
  end
end

-- Many keys' writes, prepared by the writer: `cmd key args...` in
-- chunks (a Lua call takes a bounded number of arguments).
local BULK = {HSET = true, ZADD = true, ZREM = true}
local function bulk(cmd, key, first, last)
  if not BULK[cmd] then return redis.error_reply('multijob batch: bulk ' .. cmd) end
  for j = first, last, 1000 do
    redis.call(cmd, P .. key, unpack(ARGV, j, math.min(j + 999, last)))
  end
end

-- Runs the writer has not written before: `n`, the writer's last run
-- seq ('-': not known), then columns of `n`: ids, jobs, statuses, run
-- keys ('' for a key naming the run itself), then (id, record) pairs,
-- then `m` (job\nstatus, count) pairs. A record '' travels outside the
-- script (see KEYS). When the writer's seq is right, no
-- run key is taken (MSETNX) and no id has a record, they are all new: written in bulk, seqs from `base` + 1 in order. Otherwise (a
-- run written by another leader, a slot taken, a seq the writer got
-- wrong) each goes the careful way, `put_run`, and `new_base` stays -1
-- (the writer then forgets what it assumed).
local new_base = -1
local function new_runs(a)
  local n = tonumber(ARGV[a])
  local want = ARGV[a + 1]
  a = a + 1
  local ids, jobs, sts, keys = a, a + n, a + 2 * n, a + 3 * n
  local recs = a + 4 * n
  local counts = recs + 2 * n
  local kv, self_named, free = {}, {}, want == '-' or tonumber(want) == counter('run_seq').n
  for i = 1, free and n or 0 do
    local key = ARGV[keys + i]
    if key == '' then
      self_named[#self_named + 1] = ARGV[ids + i]
    else
      kv[#kv + 1] = P .. 'runkey:' .. key
      kv[#kv + 1] = ARGV[ids + i]
    end
    if #kv >= 1000 or (i == n and #kv > 0) then
      if redis.call('MSETNX', unpack(kv)) == 0 then free = false; break end
      kv = {}
    end
  end
  for j = 1, free and #self_named or 0, 1000 do
    local got = redis.call('HMGET', P .. 'runs:rec', unpack(self_named, j, math.min(j + 999, #self_named)))
    for _, m in ipairs(got) do
      if m then free = false; break end
    end
    if not free then break end
  end
  if not free then
    if want ~= '-' then clean = 0 end
    for i = 1, n do
      put_run(ARGV[ids + i], ARGV[jobs + i], ARGV[sts + i], ARGV[keys + i], ARGV[recs + 2 * i])
    end
    return
  end
  local c = counter('run_seq')
  local base = c.n
  c.n = c.n + n
  c.dirty = true
  new_base = base
  local runs_key, active_key, run_keys, job_keys = P .. 'runs', P .. 'runs:active', P .. 'runs:key', {}
  for i = 1, n do
    -- The score as an integer string, made once: a Lua number passed to
    -- redis.call is formatted as a float each time (%.17g).
    local seq = string.format('%d', base + i)
    local id, job, st = ARGV[ids + i], ARGV[jobs + i], ARGV[sts + i]
    local job_key = job_keys[job]
    if not job_key then job_key = P .. 'runs:job:' .. job; job_keys[job] = job_key end
    zadd(runs_key, seq, id)
    zadd(job_key, seq, id)
    local key = ARGV[keys + i]
    if key ~= '' then hset(run_keys, id, key) end
    if ACTIVE[st] then
      zadd(active_key, seq, id)
    else
      zadd(P .. 'runs:status:' .. st, seq, id)
    end
  end
  for i = 1, n do
    local rec = ARGV[recs + 2 * i]
    if rec ~= '' then hset(P .. 'runs:rec', ARGV[recs + 2 * i - 1], rec) end
  end
  flush()
  add_counts(counts + 2, counts + 1 + 2 * tonumber(ARGV[counts + 1]))
end

local acks = {}
do
  local ids, j = {}, 11
  while j <= #ARGV do
    if ARGV[j] == 'run' then ids[#ids + 1] = ARGV[j + 2] end
    j = j + 2 + tonumber(ARGV[j + 1])
  end
  load_infos(ids)
end
local i = 11
while i <= #ARGV do
  local op, a = ARGV[i], i + 2
  local n = tonumber(ARGV[i + 1])
  if op == 'new' then
    new_runs(a)
  elseif op == 'bulk' then
    bulk(ARGV[a], ARGV[a + 1], a + 2, a + n - 1)
  elseif op == 'counts' then
    add_counts(a, a + n - 1)
  elseif op == 'run' then
    put_run(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  elseif op == 'events' then
    events(tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2])
  elseif op == 'events_plain' then
    events(tonumber(ARGV[a]))
  elseif op == 'failure' then
    redis.call('HSET', P .. 'failure', ARGV[a], ARGV[a + 1])
  elseif op == 'slots' then
    -- (job, slot) pairs: each job's latest, compared with the stored one
    -- at the end, all in one read and one write.
    for j = a, a + n - 1, 2 do
      local job, slot = ARGV[j], ARGV[j + 1]
      local had = slots[job]
      if not had then
        slot_order[#slot_order + 1] = job
        slots[job] = slot
      elseif slot > had then
        slots[job] = slot
      end
    end
  elseif op == 'approval' then
    redis.call('HSET', P .. 'approvals', ARGV[a], ARGV[a + 1])
  elseif op == 'inbox_progress' then
    -- Only for a command still waiting: a late write must not bring back
    -- the progress of one already done.
    if redis.call('XRANGE', P .. 'inbox', ARGV[a] .. '-1', ARGV[a] .. '-1')[1] then
      local old = tonumber(redis.call('HGET', P .. 'inbox_progress', ARGV[a]) or '0')
      if tonumber(ARGV[a + 1]) > old then
        redis.call('HSET', P .. 'inbox_progress', ARGV[a], ARGV[a + 1])
      end
    end
  elseif op == 'inbox_done' then
    redis.call('XDEL', P .. 'inbox', ARGV[a] .. '-1')
    redis.call('HDEL', P .. 'inbox_progress', ARGV[a])
  elseif op == 'prune_runs' then
    prune_runs(ARGV[a], tonumber(ARGV[a + 1]))
  elseif op == 'prune_events' then
    prune_events(ARGV[a])
  elseif op == 'kv' then
    redis.call('SET', P .. 'kv:' .. ARGV[a], ARGV[a + 1])
  elseif op == 'dispatch' then
    -- `runs`: the run ids, space-separated; then the ARGV index of each
    -- one's record (written above in this call), the entry's fields `0`,
    -- `1`, ...: a record crosses into the script once, not twice.
    local xadd = {'XADD', P .. 'ready', '*', 'runs', ARGV[a]}
    for j = 1, n - 1 do
      xadd[#xadd + 1] = tostring(j - 1)
      xadd[#xadd + 1] = ARGV[tonumber(ARGV[a + j])]
    end
    redis.call(unpack(xadd))
  elseif op == 'dispatch_to' then
    -- A worker group's runs: the group, then as `dispatch`. Its stream
    -- gets the workers' consumer group from the start (id 0: nothing
    -- added before a worker of the group exists is skipped), and is
    -- listed in `ready_groups` for the leader's recovery.
    local stream = P .. 'ready:' .. ARGV[a]
    if redis.call('SADD', P .. 'ready_groups', ARGV[a]) == 1 then
      redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')
    end
    local xadd = {'XADD', stream, '*', 'runs', ARGV[a + 1]}
    for j = 2, n - 1 do
      xadd[#xadd + 1] = tostring(j - 2)
      xadd[#xadd + 1] = ARGV[tonumber(ARGV[a + j])]
    end
    redis.call(unpack(xadd))
  elseif op == 'ready_group' then
    -- A worker group's stream that plain XADDs after this call write
    -- (see `dispatch_to`).
    local stream = P .. 'ready:' .. ARGV[a]
    if redis.call('SADD', P .. 'ready_groups', ARGV[a]) == 1 then
      redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')
    end
  elseif op == 'ack' then
    acks[#acks + 1] = ARGV[a]
  elseif op == 'res_put' then
    redis.call('HSET', P .. 'resources', ARGV[a], ARGV[a + 1])
  elseif op == 'res_del' then
    redis.call('HDEL', P .. 'resources', ARGV[a])
  elseif op == 'revision' then
    rev_seq = redis.call('INCR', P .. 'revision_seq')
    redis.call('HSET', P .. 'revisions', rev_seq, ARGV[a + 1])
    redis.call('HDEL', P .. 'revisions', rev_seq - revcap)
    if ARGV[a] == 'applied' then
      redis.call('HSET', P .. 'applied_revision', 'seq', rev_seq, 'rec', ARGV[a + 1])
    end
  else
    return redis.error_reply('multijob batch: unknown op ' .. op)
  end
  i = a + n
end

flush()
-- Results applied: acknowledged and dropped, many per command. No group
-- yet (a fresh or restarted server) is not a reason to fail the batch.
for j = 1, #acks, 500 do
  local ids = {unpack(acks, j, math.min(j + 499, #acks))}
  redis.pcall('XACK', P .. 'results', 'leader', unpack(ids))
  redis.call('XDEL', P .. 'results', unpack(ids))
end
-- Run counts and job slots: read once and written once per 1,000
-- fields. A HINCRBY (and a HGET and HSET per slot) per field was most of
-- the script's calls when each run is of another job: 24,000 jobs every
-- 2 s made ~8 calls a run.
local changed = {}
for _, f in ipairs(delta_order) do
  if deltas[f] ~= 0 then changed[#changed + 1] = f end
end
for j = 1, #changed, 1000 do
  local part = {unpack(changed, j, math.min(j + 999, #changed))}
  local had = redis.call('HMGET', P .. 'run_counts', unpack(part))
  local set, gone = {}, {}
  for k, f in ipairs(part) do
    local now = (tonumber(had[k]) or 0) + deltas[f]
    if now > 0 then
      set[#set + 1] = f
      set[#set + 1] = string.format('%d', now)
    else
      gone[#gone + 1] = f
    end
  end
  if #set > 0 then redis.call('HSET', P .. 'run_counts', unpack(set)) end
  if #gone > 0 then redis.call('HDEL', P .. 'run_counts', unpack(gone)) end
end
for j = 1, #slot_order, 1000 do
  local part = {unpack(slot_order, j, math.min(j + 999, #slot_order))}
  local had = redis.call('HMGET', P .. 'job_slots', unpack(part))
  local set = {}
  for k, job in ipairs(part) do
    if not had[k] or slots[job] > had[k] then
      set[#set + 1] = job
      set[#set + 1] = slots[job]
    end
  end
  if #set > 0 then redis.call('HSET', P .. 'job_slots', unpack(set)) end
end
for name, c in pairs(seqs) do
  if c.dirty then redis.call('SET', P .. name, c.n) end
end

-- `clean` stays last: the call after this one checks it (see STALE).
local summary = string.format('%d,%d,%d,%d,%d,%d,%d', rev_seq, first_event, n_events, new_base,
  counter('run_seq').n, counter('event_seq').n, clean)
redis.call('SET', marker, batch .. summary, 'EX', 3600)
local out = {'OK', summary}
for _, id in ipairs(refused) do out[#out + 1] = id end
return out
end

local ok, out = pcall(batch)
if gate_open and (not ok or type(out) ~= 'table' or out[1] ~= 'OK') then
  close_gate()
end
if not ok then
  return redis.error_reply(type(out) == 'table' and out.err or tostring(out))
end
return out
