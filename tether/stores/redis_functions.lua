#!lua name=@LIBRARY@
--[[
Tether's Redis Functions (Redis 7): every change of shared state is one of these, so it is
atomic across every worker of every host (/work/shared/SCALE-OUT.md sections 4, 6, 7).

Arguments: ARGV[1] the key prefix, ARGV[2] the store's epoch, ARGV[3] the session id, then
each function's own. Keys are built here from the prefix and the session id (Redis Cluster,
which would need them declared, is out of scope: the functions also touch global keys).

No JSON is encoded here (cjson's key order and escapes differ from Python's): event bytes come
ready-made from Python, as the envelope after '{"id":N'; where a number only known here goes
into an event (a turn, a queue position), Python sends the bytes before and after it.
Errors are replies starting with a code the Python side matches: EPOCH, CLOSED, FENCED,
CORRUPT, BUSY, QUEUE_FULL, TOO_MANY, NOT_FOUND.
]]

local function key(p, sid, name) return p .. ':{' .. sid .. '}:' .. name end
local function heartbeat(p, wid) return p .. ':w:' .. wid end
local function owned(p, wid) return p .. ':w:' .. wid .. ':owned' end

local function wake(p, sid, ...)
  local q = string.format('%d', redis.call('INCR', p .. ':wake:seq'))
  redis.call('XADD', p .. ':wake', 'MAXLEN', '~', @WAKE_MAXLEN@, q .. '-0', 's', sid, ...)
end

-- The epoch matches and the session exists and is open; returns its record's key.
local function check(p, epoch, sid)
  if redis.call('GET', p .. ':epoch') ~= epoch then
    return nil, redis.error_reply('EPOCH the store lost its data: its epoch changed')
  end
  local rec = key(p, sid, 'rec')
  if redis.call('EXISTS', rec) == 0 then
    return nil, redis.error_reply('CLOSED the session is gone')
  end
  local st = redis.call('HMGET', rec, 'closed', 'last')
  if st[1] == '1' then return nil, redis.error_reply('CLOSED the session is closed') end
  if not st[2] and redis.call('EXISTS', key(p, sid, 'log')) == 1 then
    return nil, redis.error_reply('CORRUPT the log exists but its record has no last id')
  end
  return rec
end

local function fenced(rec, fence)
  return fence ~= '' and fence ~= redis.call('HGET', rec, 'fence')
end

-- Appends one event (its bytes after '{"id":N') with the next id; returns the id.
local function add(p, sid, rec, rest)
  local n = (tonumber(redis.call('HGET', rec, 'last')) or 0) + 1
  local id = string.format('%d', n)
  local data = '{"id":' .. id .. rest
  redis.call('XADD', key(p, sid, 'log'), id .. '-0', 'd', data)  -- refuses id <= top
  redis.call('HSET', rec, 'last', id)
  redis.call('INCR', p .. ':events')  -- every event of every session, ever (/metrics)
  if #data > @WAKE_DATA_BYTES@ then data = '' end
  wake(p, sid, 'n', id, 'd', data)
  return n
end

local function inbox_changed(p, sid)
  local r = redis.call('INCR', p .. ':inbox:rev')
  wake(p, sid, 'c', 'inbox ' .. r)
end

local function alive(p, wid)
  return wid ~= '' and wid ~= false and redis.call('EXISTS', heartbeat(p, wid)) == 1
end

-- ARGV: p epoch sid fence rest
local function append(keys, args)
  local rec, err = check(args[1], args[2], args[3])
  if not rec then return err end
  if fenced(rec, args[4]) then return redis.error_reply('FENCED another worker owns it') end
  return add(args[1], args[3], rec, args[5])
end

-- ARGV: p epoch sid fence rest [rest ...]   (an owner's burst, in order; returns the first
-- id: the others follow it without a gap)
local function append_many(keys, args)
  local rec, err = check(args[1], args[2], args[3])
  if not rec then return err end
  if fenced(rec, args[4]) then return redis.error_reply('FENCED another worker owns it') end
  local first = (tonumber(redis.call('HGET', rec, 'last')) or 0) + 1
  for i = 5, #args do add(args[1], args[3], rec, args[i]) end
  return first
end

-- ARGV: p epoch sid   (closes the session everywhere and removes its keys)
local function drop(keys, args)
  local p, sid = args[1], args[3]
  redis.call('ZREM', p .. ':sessions', sid)
  local rec = key(p, sid, 'rec')
  if redis.call('EXISTS', rec) == 0 and redis.call('EXISTS', key(p, sid, 'log')) == 0 then
    return 0
  end
  local owner = redis.call('HGET', rec, 'owner')
  if owner and owner ~= '' then redis.call('SREM', owned(p, owner), sid) end
  local had = redis.call('HLEN', key(p, sid, 'pending'))
  redis.call('HSET', rec, 'closed', '1')
  wake(p, sid, 'c', 'closed')
  if had > 0 then inbox_changed(p, sid) end
  -- Every function refuses a closed record and a missing one alike: the keys can go now.
  redis.call('UNLINK', rec, key(p, sid, 'log'), key(p, sid, 'pending'),
             key(p, sid, 'pkeys'), key(p, sid, 'settled'), key(p, sid, 'queue'))
  return 1
end

-- ARGV: p epoch sid created_at max_sessions field value [field value ...]
local function create(keys, args)
  local p, sid = args[1], args[3]
  if redis.call('GET', p .. ':epoch') ~= args[2] then
    return redis.error_reply('EPOCH the store lost its data: its epoch changed')
  end
  local rec = key(p, sid, 'rec')
  if redis.call('EXISTS', rec) == 1 then return redis.error_reply('EXISTS the session exists') end
  if redis.call('ZCARD', p .. ':sessions') >= tonumber(args[5]) then
    return redis.error_reply('TOO_MANY the session limit is reached')
  end
  redis.call('HSET', rec, 'last', 0, 'turns', 0, 'turn_active', 0, 'cancel', 0, 'owner', '',
             'fence', 0, 'closed', 0, 'agent_started', 0, 'started', 0,
             'created_at', args[4])
  for i = 6, #args, 2 do redis.call('HSET', rec, args[i], args[i + 1]) end
  redis.call('ZADD', p .. ':sessions', args[4], sid)
  return 1
end

-- ARGV: p epoch sid inbox(0|1) field value [field value ...]
local function update(keys, args)
  local rec, err = check(args[1], args[2], args[3])
  if not rec then return err end
  for i = 5, #args, 2 do redis.call('HSET', rec, args[i], args[i + 1]) end
  wake(args[1], args[3], 'c', 'rec')
  if args[4] == '1' then inbox_changed(args[1], args[3]) end
  return 1
end

-- Claims the session for `me` when it has no live owner; starts turn turns+1 with its
-- `user` event. Returns {n, owner, fence, claimed}. A claim is also told to every worker
-- as the control `own <me> <n> <fence>`: `me` may be another worker than the caller (a
-- draining host hands new turns to a live one), which then starts the turn.
local function start_turn(p, sid, rec, me, title, user_head, user_tail)
  local st = redis.call('HMGET', rec, 'owner', 'fence', 'turns', 'title_set')
  local owner, fence, claimed = st[1] or '', tonumber(st[2]) or 0, 0
  if owner ~= me and not alive(p, owner) then
    if owner ~= '' then redis.call('SREM', owned(p, owner), sid) end
    owner, fence, claimed = me, fence + 1, 1
    redis.call('HSET', rec, 'owner', me, 'fence', fence)
    redis.call('SADD', owned(p, me), sid)
  end
  local n = (tonumber(st[3]) or 0) + 1
  if n == 1 and st[4] ~= '1' and title ~= '' then
    redis.call('HSET', rec, 'title', title)
  end
  redis.call('HSET', rec, 'turns', n, 'turn_active', n, 'cancel', 0)
  add(p, sid, rec, user_head .. string.format('%d', n) .. user_tail)
  if claimed == 1 then
    wake(p, sid, 'c', string.format('own %s %d %d', me, n, fence))
  end
  return {n, owner, fence, claimed}
end

-- Refuses while a turn runs: TAKEOVER when its owner is dead, else BUSY.
local function busy(p, rec)
  local st = redis.call('HMGET', rec, 'turn_active', 'owner')
  if st[1] == '0' or not st[1] then return nil end
  if not alive(p, st[2] or '') then return {'takeover', st[2] or ''} end
  return redis.error_reply('BUSY turn ' .. st[1] .. ' is still running')
end

-- ARGV: p epoch sid me title user_head user_tail [queue_max item queued_head queued_tail]
local function begin_turn(keys, args)
  local p, sid = args[1], args[3]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  local refusal = busy(p, rec)
  if refusal and refusal[1] ~= 'takeover' and args[8] then
    local q = key(p, sid, 'queue')
    local length = redis.call('LLEN', q)
    if length >= tonumber(args[8]) then
      return redis.error_reply('QUEUE_FULL the queue holds ' .. length .. ' prompts')
    end
    redis.call('RPUSH', q, args[9])
    add(p, sid, rec, args[10] .. string.format('%d', length + 1) .. args[11])
    return {'queued', length + 1}
  end
  if refusal then return refusal end
  local r = start_turn(p, sid, rec, args[4], args[5], args[6], args[7])
  return {'turn', r[1], r[2], r[3], r[4]}
end

local function remove_at(q, index)
  redis.call('LSET', q, index, '\0removed')
  redis.call('LREM', q, 1, '\0removed')
end

-- ARGV: p epoch sid position item dequeued_rest [me title user_head user_tail]
-- Removes queued prompt `position` (from 1) if it is still `item`; with `me`, sends it as a
-- new turn (refused while a turn runs).
local function dequeue(keys, args)
  local p, sid = args[1], args[3]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  local q = key(p, sid, 'queue')
  local index = tonumber(args[4]) - 1
  if redis.call('LINDEX', q, index) ~= args[5] then
    return redis.error_reply('NOT_FOUND the queue changed')
  end
  if args[7] then
    local refusal = busy(p, rec)
    if refusal then return refusal end
  end
  remove_at(q, index)
  add(p, sid, rec, args[6])
  if not args[7] then return {'removed'} end
  local r = start_turn(p, sid, rec, args[7], args[8], args[9], args[10])
  return {'turn', r[1], r[2], r[3], r[4]}
end

-- ARGV: p epoch sid fence turn turn_end_rest [item dequeued_rest user_head user_tail]
-- The owner ends turn `turn`: turn_end and the freed slot are one step. With `item` (the
-- queue's head as the owner read it), the head is sent as the next turn in the same step.
-- Returns {ended (0: the turn had ended already), next turn number or 0 or -1 (the queue
-- changed: send its head with dequeue)}.
local function end_turn(keys, args)
  local p, sid = args[1], args[3]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  if fenced(rec, args[4]) then return redis.error_reply('FENCED another worker owns it') end
  if redis.call('HGET', rec, 'turn_active') ~= args[5] then return {0, 0} end
  add(p, sid, rec, args[6])
  redis.call('HSET', rec, 'turn_active', 0, 'cancel', 0)
  if not args[7] then return {1, 0} end
  local q = key(p, sid, 'queue')
  if redis.call('LINDEX', q, 0) ~= args[7] then return {1, -1} end
  redis.call('LPOP', q)
  add(p, sid, rec, args[8])
  local owner = redis.call('HGET', rec, 'owner')
  local r = start_turn(p, sid, rec, owner, '', args[9], args[10])
  return {1, r[1]}
end

-- ARGV: p epoch sid   Returns 1 (the owner was told), 0 (no turn, or already stopping),
-- or {'takeover', owner} (the owner is dead: take the session over instead).
local function request_cancel(keys, args)
  local p, sid = args[1], args[3]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  local st = redis.call('HMGET', rec, 'turn_active', 'cancel', 'owner')
  if st[1] == '0' or st[1] == st[2] then return 0 end
  if not alive(p, st[3] or '') then return {'takeover', st[3] or ''} end
  redis.call('HSET', rec, 'cancel', st[1])
  wake(p, sid, 'c', 'cancel ' .. st[1])
  return 1
end

-- ARGV: p epoch sid fence rid kind key pending request_rest auto_rest auto_description
--       auto_allowed ('1': the owner's server allows auto-approve)
-- Opens an approval or question, or returns the identical pending one (never stacked).
-- Returns {rid, created, auto}.
local function open_prompt(keys, args)
  local p, sid = args[1], args[3]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  if fenced(rec, args[4]) then return redis.error_reply('FENCED another worker owns it') end
  local pkeys = key(p, sid, 'pkeys')
  local existing = redis.call('HGET', pkeys, args[7])
  if existing then return {existing, 0, 0} end
  local rid = args[5]
  add(p, sid, rec, args[9])
  local auto = args[6] == 'approval' and args[12] == '1'
    and redis.call('HGET', rec, 'auto_approve') == '1'
  if auto then
    redis.call('HSET', key(p, sid, 'settled'), rid, args[6] .. ' ' .. args[11])
    add(p, sid, rec, args[10])
    return {rid, 1, 1}
  end
  redis.call('HSET', key(p, sid, 'pending'), rid, args[8])
  redis.call('HSET', pkeys, args[7], rid)
  inbox_changed(p, sid)
  return {rid, 1, 0}
end

local function settle_one(p, sid, rec, rid, raw, resolved_rest, description)
  local request = cjson.decode(raw)
  redis.call('HDEL', key(p, sid, 'pending'), rid)
  redis.call('HDEL', key(p, sid, 'pkeys'), request['key'])
  redis.call('HSET', key(p, sid, 'settled'), rid, request['kind'] .. ' ' .. description)
  add(p, sid, rec, resolved_rest)
end

-- ARGV: p epoch sid rid kind resolved_rest description
-- First answer wins: returns 'OK', {'settled', description} (409) or NOT_FOUND.
local function settle(keys, args)
  local p, sid, rid = args[1], args[3], args[4]
  local rec, err = check(p, args[2], sid)
  if not rec then return err end
  local raw = redis.call('HGET', key(p, sid, 'pending'), rid)
  if raw and cjson.decode(raw)['kind'] == args[5] then
    settle_one(p, sid, rec, rid, raw, args[6], args[7])
    inbox_changed(p, sid)
    return 'OK'
  end
  local settled = redis.call('HGET', key(p, sid, 'settled'), rid)
  if settled and string.sub(settled, 1, #args[5] + 1) == args[5] .. ' ' then
    return {'settled', string.sub(settled, #args[5] + 2)}
  end
  return redis.error_reply('NOT_FOUND no ' .. args[5] .. ' request ' .. rid)
end

-- ARGV: p epoch sid dead fence turn_active adopter turn_end_rest [rid resolved_rest ...]
-- Ends what a dead owner left open, if the session is still as the caller read it (a CAS:
-- 'RETRY' otherwise): each pending request resolved `cancelled`, the running turn ended
-- `interrupted`; the session is then free (no owner) and the fence moves on. A turn the dead
-- owner never started (its prompt came while the owner was dying) is not lost: with an
-- `adopter` (a live worker) that worker becomes the owner, to run it: {'ADOPTED', turn, fence}.
local function takeover(keys, args)
  local p, sid, dead = args[1], args[3], args[4]
  local rec, err = check(p, args[2], sid)
  if not rec then
    redis.call('SREM', owned(p, dead), sid)
    return err
  end
  local st = redis.call('HMGET', rec, 'owner', 'fence', 'turn_active', 'started')
  if (st[1] or '') ~= dead or alive(p, dead) then return 'GONE' end
  if st[2] ~= args[5] or st[3] ~= args[6] then return 'RETRY' end
  local pending = key(p, sid, 'pending')
  if redis.call('HLEN', pending) ~= (#args - 8) / 2 then return 'RETRY' end
  for i = 9, #args, 2 do
    if redis.call('HEXISTS', pending, args[i]) == 0 then return 'RETRY' end
  end
  local fence = tonumber(args[5]) + 1
  redis.call('SREM', owned(p, dead), sid)
  if args[7] ~= '' and args[6] ~= '0' and st[4] ~= args[6] and #args == 8 then
    redis.call('HSET', rec, 'owner', args[7], 'fence', fence)
    redis.call('SADD', owned(p, args[7]), sid)
    return {'ADOPTED', tonumber(args[6]), fence}
  end
  for i = 9, #args, 2 do
    settle_one(p, sid, rec, args[i], redis.call('HGET', pending, args[i]), args[i + 1],
               'cancelled')
  end
  if #args > 8 then inbox_changed(p, sid) end
  if args[6] ~= '0' then add(p, sid, rec, args[8]) end
  redis.call('HSET', rec, 'owner', '', 'fence', fence, 'turn_active', 0, 'cancel', 0)
  return 'OK'
end

-- ARGV: p epoch sid fence turn   The owner is about to give turn `turn` to its agent:
-- from now on a takeover ends it `interrupted` instead of adopting it. 0: the turn is no
-- longer running (it was ended meanwhile), so it must not start.
local function mark_started(keys, args)
  local rec, err = check(args[1], args[2], args[3])
  if not rec then return err end
  if fenced(rec, args[4]) then return redis.error_reply('FENCED another worker owns it') end
  if redis.call('HGET', rec, 'turn_active') ~= args[5] then return 0 end
  redis.call('HSET', rec, 'started', args[5])
  return 1
end

-- ARGV: p epoch sid me fence   The owner lets go of an idle session.
local function release(keys, args)
  local p, sid, me = args[1], args[3], args[4]
  local rec = key(p, sid, 'rec')
  local st = redis.call('HMGET', rec, 'owner', 'fence', 'turn_active')
  if st[1] ~= me or st[2] ~= args[5] or st[3] ~= '0' then return 0 end
  redis.call('HSET', rec, 'owner', '')
  redis.call('SREM', owned(p, me), sid)
  return 1
end

redis.register_function('@LIBRARY@_append', append)
redis.register_function('@LIBRARY@_append_many', append_many)
redis.register_function('@LIBRARY@_drop', drop)
redis.register_function('@LIBRARY@_create', create)
redis.register_function('@LIBRARY@_update', update)
redis.register_function('@LIBRARY@_begin_turn', begin_turn)
redis.register_function('@LIBRARY@_dequeue', dequeue)
redis.register_function('@LIBRARY@_end_turn', end_turn)
redis.register_function('@LIBRARY@_request_cancel', request_cancel)
redis.register_function('@LIBRARY@_open_prompt', open_prompt)
redis.register_function('@LIBRARY@_settle', settle)
redis.register_function('@LIBRARY@_takeover', takeover)
redis.register_function('@LIBRARY@_release', release)
redis.register_function('@LIBRARY@_mark_started', mark_started)
