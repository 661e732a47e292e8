//! The Lua scripts every multi-key write runs as: each is atomic in Redis (no other command
//! runs in between), so a message is never half filed or half deleted, whichever node wrote.
//!
//! Every script takes the key prefix as `ARGV[1]` and builds its keys from it (see the key
//! layout in `super`). That is fine on one Redis (or a primary with replicas); it is why
//! Redis Cluster is not supported.

/// Functions the scripts share: deleting a message entirely, unfiling it from one mailbox.
const PRELUDE: &str = r#"
local function remove_msg(p, id)
  local boxes = redis.call('SMEMBERS', p..'mb:'..id)
  for _, b in ipairs(boxes) do
    redis.call('ZREM', p..'box:'..b, id)
    redis.call('SREM', p..'unread:'..b, id)
    if redis.call('EXISTS', p..'box:'..b) == 0 then redis.call('SREM', p..'boxes', b) end
  end
  local size = redis.call('HGET', p..'m:'..id, 'size')
  if size then redis.call('DECRBY', p..'bytes', size) end
  for _, t in ipairs(redis.call('SMEMBERS', p..'t:'..id)) do
    redis.call('SREM', p..'tag:'..t, id)
    if redis.call('EXISTS', p..'tag:'..t) == 0 then redis.call('SREM', p..'tags', t) end
  end
  redis.call('DEL', p..'m:'..id, p..'b:'..id, p..'mb:'..id, p..'t:'..id)
  redis.call('ZREM', p..'all', id)
  redis.call('ZREM', p..'at', id)
  redis.call('SREM', p..'unread', id)
  return boxes
end
-- -1: the mailbox did not hold it; 0: unfiled, kept elsewhere; 1: deleted.
local function unfile(p, id, b)
  if redis.call('SREM', p..'mb:'..id, b) == 0 then return -1 end
  redis.call('ZREM', p..'box:'..b, id)
  redis.call('SREM', p..'unread:'..b, id)
  if redis.call('EXISTS', p..'box:'..b) == 0 then redis.call('SREM', p..'boxes', b) end
  if redis.call('EXISTS', p..'mb:'..id) == 0 then
    remove_msg(p, id)
    return 1
  end
  return 0
end
-- Unfiles the oldest messages of mailbox b beyond its newest `keep`, at most `limit`.
-- Appends {id, deleted} to out.
local function trim(p, b, keep, limit, out)
  local over = redis.call('ZCARD', p..'box:'..b) - keep
  if over <= 0 then return end
  if over > limit then over = limit end
  local ids = redis.call('ZRANGE', p..'box:'..b, 0, over - 1)
  for _, id in ipairs(ids) do
    local r = unfile(p, id, b)
    if r >= 0 then table.insert(out, {id, r}) end
  end
end
"#;

/// `SET` of the body comes first in the same `MULTI`; this files the message.
/// ARGV: prefix, id, summary JSON, document JSON, header block, body text, size, received
/// at, cap (0: none), then the mailboxes. Returns 1, or 0 when the id was stored already
/// (a retried batch), and what the cap trimmed as `{mailbox, id, deleted}`.
const DELIVER: &str = r#"
local p, id = ARGV[1], ARGV[2]
local m = p..'m:'..id
if redis.call('EXISTS', m) == 1 then return {0, {}} end
local seq = redis.call('INCR', p..'seq')
redis.call('HSET', m, 'sum', ARGV[3], 'doc', ARGV[4], 'head', ARGV[5], 'text', ARGV[6],
  'size', ARGV[7], 'at', ARGV[8], 'seen', '0', 'seq', seq)
redis.call('ZADD', p..'all', seq, id)
redis.call('ZADD', p..'at', ARGV[8], id)
redis.call('SADD', p..'unread', id)
redis.call('INCRBY', p..'bytes', ARGV[7])
local cap = tonumber(ARGV[9])
local trimmed = {}
for i = 10, #ARGV do
  local b = ARGV[i]
  redis.call('SADD', p..'mb:'..id, b)
  redis.call('ZADD', p..'box:'..b, seq, id)
  redis.call('SADD', p..'unread:'..b, id)
  redis.call('SADD', p..'boxes', b)
end
if cap > 0 then
  for i = 10, #ARGV do
    local out = {}
    trim(p, ARGV[i], cap, 1000, out)
    for _, r in ipairs(out) do table.insert(trimmed, {ARGV[i], r[1], r[2]}) end
  end
end
return {1, trimmed}
"#;

/// ARGV: prefix, id. Returns the mailboxes it was filed under, or false.
const DELETE: &str = r#"
local p, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', p..'m:'..id) == 0 then return false end
return remove_msg(p, id)
"#;

/// ARGV: prefix, mailbox, most messages to unfile. Returns the ids unfiled.
const DELETE_MAILBOX: &str = r#"
local p, b = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGE', p..'box:'..b, 0, tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  if unfile(p, id, b) >= 0 then table.insert(out, id) end
end
return out
"#;

/// ARGV: prefix, id, 1 (read) or 0. Returns 1, or 0 if there was no such message.
const SET_SEEN: &str = r#"
local p, id, seen = ARGV[1], ARGV[2], ARGV[3]
local m = p..'m:'..id
if redis.call('EXISTS', m) == 0 then return 0 end
redis.call('HSET', m, 'seen', seen)
local boxes = redis.call('SMEMBERS', p..'mb:'..id)
if seen == '1' then
  redis.call('SREM', p..'unread', id)
  for _, b in ipairs(boxes) do redis.call('SREM', p..'unread:'..b, id) end
else
  redis.call('SADD', p..'unread', id)
  for _, b in ipairs(boxes) do redis.call('SADD', p..'unread:'..b, id) end
end
return 1
"#;

/// ARGV: prefix, mailbox, keep, most to unfile. Returns `{id, deleted}` pairs.
const TRIM: &str = r#"
local out = {}
trim(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), out)
return out
"#;

/// ARGV: prefix, then ids. Deletes each; returns `{id, {mailboxes}}` for those that existed.
const DELETE_IDS: &str = r#"
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', p..'m:'..id) == 1 then
    table.insert(out, {id, remove_msg(p, id)})
  else
    -- An index entry without its message (never expected): drop it.
    redis.call('ZREM', p..'all', id)
    redis.call('ZREM', p..'at', id)
  end
end
return out
"#;

/// ARGV: prefix, max bytes, most to delete. Deletes the oldest until the total fits.
/// Returns `{id, {mailboxes}}`.
const EVICT_SIZE: &str = r#"
local p, max, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
while #out < limit and tonumber(redis.call('GET', p..'bytes') or '0') > max do
  local oldest = redis.call('ZRANGE', p..'all', 0, 0)
  if #oldest == 0 then break end
  local id = oldest[1]
  if redis.call('EXISTS', p..'m:'..id) == 1 then
    table.insert(out, {id, remove_msg(p, id)})
  else
    redis.call('ZREM', p..'all', id)
  end
end
return out
"#;

/// ARGV: prefix, zset (`all` or `box:<m>`), unread set, offset, limit.
/// Returns `{total, unread, {summary, seen}...}`: one consistent page.
const LIST: &str = r#"
local p = ARGV[1]
local total = redis.call('ZCARD', p..ARGV[2])
local unread = redis.call('SCARD', p..ARGV[3])
local off, lim = tonumber(ARGV[4]), tonumber(ARGV[5])
local page = {}
if lim > 0 then
  local ids = redis.call('ZREVRANGE', p..ARGV[2], off, off + lim - 1)
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', p..'m:'..id, 'sum', 'seen')
    if v[1] then table.insert(page, {v[1], v[2]}) end
  end
end
return {total, unread, page}
"#;

/// ARGV: prefix, greylist key, record, last seen.
const GREY_PUT: &str = r#"
redis.call('HSET', ARGV[1]..'grey', ARGV[2], ARGV[3])
redis.call('ZADD', ARGV[1]..'grey_seen', ARGV[4], ARGV[2])
return 1
"#;

/// ARGV: prefix, before (ms). Deletes records last seen before; returns how many.
const GREY_EXPIRE: &str = r#"
local p = ARGV[1]
local keys = redis.call('ZRANGEBYSCORE', p..'grey_seen', '-inf', '(' .. ARGV[2])
for _, k in ipairs(keys) do
  redis.call('HDEL', p..'grey', k)
  redis.call('ZREM', p..'grey_seen', k)
end
return #keys
"#;

/// ARGV: prefix, address, hash, enabled, senders JSON. 1 if added, 0 if it existed.
const USER_ADD: &str = r#"
local p, a = ARGV[1], ARGV[2]
if redis.call('ZADD', p..'users', 'NX', 0, a) == 0 then return 0 end
redis.call('HSET', p..'user:'..a, 'hash', ARGV[3], 'enabled', ARGV[4], 'senders', ARGV[5])
return 1
"#;

/// ARGV: prefix, address, field, value. 1 if the user exists (and was changed).
const USER_SET: &str = r#"
local k = ARGV[1]..'user:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, ARGV[3], ARGV[4])
return 1
"#;

/// ARGV: prefix, id. `{}` when there is no such message, else `{1, tags...}`.
const TAGS_GET: &str = r#"
local p, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', p..'m:'..id) == 0 then return {} end
local out = redis.call('SMEMBERS', p..'t:'..id)
table.insert(out, 1, '1')
return out
"#;

/// ARGV: prefix, id, then the tags. Replaces the message's tags; 0 if there is none.
const TAGS_PUT: &str = r#"
local p, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', p..'m:'..id) == 0 then return 0 end
for _, t in ipairs(redis.call('SMEMBERS', p..'t:'..id)) do
  redis.call('SREM', p..'tag:'..t, id)
  if redis.call('EXISTS', p..'tag:'..t) == 0 then redis.call('SREM', p..'tags', t) end
end
redis.call('DEL', p..'t:'..id)
for i = 3, #ARGV do
  local t = ARGV[i]
  redis.call('SADD', p..'t:'..id, t)
  redis.call('SADD', p..'tag:'..t, id)
  redis.call('SADD', p..'tags', t)
end
return 1
"#;

/// ARGV: prefix, from, to (empty: remove `from`). Returns how many messages had `from`.
const TAGS_RENAME: &str = r#"
local p, from, to = ARGV[1], ARGV[2], ARGV[3]
local ids = redis.call('SMEMBERS', p..'tag:'..from)
for _, id in ipairs(ids) do
  redis.call('SREM', p..'t:'..id, from)
  if to ~= '' then
    redis.call('SADD', p..'t:'..id, to)
    redis.call('SADD', p..'tag:'..to, id)
  end
end
redis.call('DEL', p..'tag:'..from)
redis.call('SREM', p..'tags', from)
if to ~= '' and #ids > 0 then redis.call('SADD', p..'tags', to) end
return #ids
"#;

/// The scripts, with the prelude, ready to run (`EVALSHA`, loaded on `NOSCRIPT`).
pub(super) struct Scripts {
    pub deliver_source: String,
    pub delete: redis::Script,
    pub delete_mailbox: redis::Script,
    pub set_seen: redis::Script,
    pub trim: redis::Script,
    pub delete_ids: redis::Script,
    pub evict_size: redis::Script,
    pub list: redis::Script,
    pub grey_put: redis::Script,
    pub grey_expire: redis::Script,
    pub user_add: redis::Script,
    pub user_set: redis::Script,
    pub tags_get: redis::Script,
    pub tags_put: redis::Script,
    pub tags_rename: redis::Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let with = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            // Run with EVAL inside the delivery MULTI: EVALSHA there could meet NOSCRIPT
            // after a Redis restart, failing one command of the transaction.
            deliver_source: format!("{PRELUDE}\n{DELIVER}"),
            delete: with(DELETE),
            delete_mailbox: with(DELETE_MAILBOX),
            set_seen: with(SET_SEEN),
            trim: with(TRIM),
            delete_ids: with(DELETE_IDS),
            evict_size: with(EVICT_SIZE),
            list: with(LIST),
            grey_put: with(GREY_PUT),
            grey_expire: with(GREY_EXPIRE),
            user_add: with(USER_ADD),
            user_set: with(USER_SET),
            tags_get: with(TAGS_GET),
            tags_put: with(TAGS_PUT),
            tags_rename: with(TAGS_RENAME),
        }
    }
}
