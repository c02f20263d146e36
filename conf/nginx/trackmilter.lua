-- trackmilter's edge: nginx answers the click and pixel URLs itself, verifying each token
-- exactly as trackmilter/tokens.py does (truncated HMAC-SHA256, key ids, rotation), and
-- writes every answered hit to its access log; `trackmilter edge` reads that log, judges
-- each hit and stores it. Nothing here touches a database or waits on Python.
--
-- Needs nginx with the Lua module (Debian: libnginx-mod-http-lua, LuaJIT) and libcrypto
-- (already loaded by nginx for TLS). Load once per configuration, in the http block:
--
--     lua_package_path "/etc/nginx/trackmilter/?.lua;;";
--     init_by_lua_block { require("trackmilter").load("/etc/trackmilter/secret") }
--
-- init_by_lua runs in the master process as root when nginx starts or reloads: the key
-- file can stay readable by root only, the workers hold the keys in memory, and a reload
-- (`systemctl reload nginx`) picks up a rotated key file. A missing, empty or short key
-- file stops nginx from starting, with the reason in its error log.
--
-- Token layout (see tokens.py), base64url without padding:
--   byte 0   version << 4 | kind << 1 | https      byte 1   key id
--   10 bytes tracking id   varint link index   click only: URL without its scheme
--   10 bytes HMAC-SHA256(key, everything before) truncated to 80 bits

local ffi = require "ffi"
local bit = require "bit"
local b64 = require "ngx.base64"

local band, bor, bxor, rshift = bit.band, bit.bor, bit.bxor, bit.rshift
local byte, sub, find, char = string.byte, string.sub, string.find, string.char
local ngx = ngx

ffi.cdef [[
typedef struct {
    unsigned int h[8]; unsigned int Nl, Nh; unsigned int data[16];
    unsigned int num, md_len;
} trackmilter_SHA256_CTX;
int SHA256_Init(trackmilter_SHA256_CTX *c);
int SHA256_Update(trackmilter_SHA256_CTX *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, trackmilter_SHA256_CTX *c);
]]

-- libcrypto's SHA-256 block functions, not its one-shot HMAC(): with OpenSSL 3 that looks
-- the digest up in the provider table on every call, several times the cost of the hash.
local C = ffi.C
local CTX = "trackmilter_SHA256_CTX"
local CTX_SIZE = ffi.sizeof(CTX)
local work = ffi.new(CTX)
local digest = ffi.new("unsigned char[32]")

local VERSION = 1
local MAC_BYTES = 10
local HEADER = 12           -- head, key id, tracking id
local MIN_KEY_LENGTH = 16
local MAX_TOKEN = 4096      -- tokens.MAX_TOKEN_CHARS (a unit test keeps them equal)
local KIND_CLICK, KIND_OPEN = 0, 1

-- 1x1 transparent GIF, the bytes the Python tracker sends.
local PIXEL = (function()
    local hex = "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
    return (hex:gsub("..", function(h) return char(tonumber(h, 16)) end))
end)()
local NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"

local M = {}
local keys = {}             -- key id -> list of { inner = ctx, outer = ctx }

local function sha256(data)
    C.SHA256_Init(work)
    C.SHA256_Update(work, data, #data)
    C.SHA256_Final(digest, work)
    return ffi.string(digest, 32)
end

-- The key's HMAC inner and outer states, computed once (RFC 2104).
local function keyed(secret)
    local k = secret
    if #k > 64 then k = sha256(k) end
    local ipad, opad = {}, {}
    for i = 1, 64 do
        local c = byte(k, i) or 0
        ipad[i] = char(bxor(c, 0x36))
        opad[i] = char(bxor(c, 0x5c))
    end
    local inner, outer = ffi.new(CTX), ffi.new(CTX)
    local ip, op = table.concat(ipad), table.concat(opad)
    C.SHA256_Init(inner); C.SHA256_Update(inner, ip, 64)
    C.SHA256_Init(outer); C.SHA256_Update(outer, op, 64)
    return { inner = inner, outer = outer }
end

-- Whether the first MAC_BYTES of HMAC(key, body) equal mac, without an early exit.
local function mac_matches(key, body, mac)
    ffi.copy(work, key.inner, CTX_SIZE)
    C.SHA256_Update(work, body, #body)
    C.SHA256_Final(digest, work)
    ffi.copy(work, key.outer, CTX_SIZE)
    C.SHA256_Update(work, digest, 32)
    C.SHA256_Final(digest, work)
    local diff = 0
    for j = 0, MAC_BYTES - 1 do
        diff = bor(diff, bxor(digest[j], byte(mac, j + 1)))
    end
    return diff == 0
end

-- Read the key file as Signer.from_file does: one key per line, blank lines and "#"
-- comments ignored, the first key signs (Python's business), every key verifies.
function M.load(path)
    local f, err = io.open(path, "rb")
    if not f then
        error("trackmilter: cannot read key file " .. path .. ": " .. tostring(err), 0)
    end
    local fresh, count = {}, 0
    -- Byte for byte as tokens.py reads it: lines end at LF; spaces, tabs, CR, VT and FF
    -- around a key are ignored; a key is printable ASCII, else the file is refused.
    for line in f:lines() do
        local s = line:match("^[ \t\r\v\f]*(.-)[ \t\r\v\f]*$")
        if s ~= "" and sub(s, 1, 1) ~= "#" then
            count = count + 1
            if find(s, "[^!-~]") then
                f:close()
                error(("trackmilter: %s: key %d holds characters that are not printable ASCII")
                    :format(path, count), 0)
            end
            if #s < MIN_KEY_LENGTH then
                f:close()
                error(("trackmilter: %s: key %d is %d bytes; at least %d needed")
                    :format(path, count, #s, MIN_KEY_LENGTH), 0)
            end
            local kid = byte(sha256("trackmilter key id\0" .. s), 1)
            fresh[kid] = fresh[kid] or {}
            table.insert(fresh[kid], keyed(s))
        end
    end
    f:close()
    if count == 0 then
        error("trackmilter: key file " .. path .. " holds no key", 0)
    end
    keys = fresh
    return count
end

-- kind, https, tail, raw tracking id; or nil for anything tokens.py would refuse. The
-- link index is only checked for shape: `trackmilter edge` reads it again in Python.
local function verify(token)
    local n = #token
    if n == 0 or n > MAX_TOKEN or n % 4 == 1 or find(token, "[^A-Za-z0-9_-]") then
        return nil
    end
    local raw = b64.decode_base64url(token)
    -- Exactly what the signer writes: no spare bits set in the last character.
    if not raw or b64.encode_base64url(raw) ~= token then return nil end
    local len = #raw
    if len < HEADER + 1 + MAC_BYTES then return nil end
    local body, mac = sub(raw, 1, len - MAC_BYTES), sub(raw, len - MAC_BYTES + 1)
    local head, kid = byte(body, 1, 2)
    if rshift(head, 4) ~= VERSION then return nil end
    local candidates = keys[kid]
    if not candidates then return nil end
    local ok = false
    for i = 1, #candidates do
        if mac_matches(candidates[i], body, mac) then ok = true end
    end
    if not ok then return nil end
    local kind = band(rshift(head, 1), 7)
    if kind ~= KIND_CLICK and kind ~= KIND_OPEN then return nil end
    local pos, shift, blen = HEADER + 1, 0, #body
    while true do
        if pos > blen or shift > 28 then return nil end
        local b = byte(body, pos)
        pos = pos + 1
        if band(b, 0x80) == 0 then break end
        shift = shift + 7
    end
    local tail = sub(body, pos)
    if find(tail, "[\128-\255]") then return nil end
    return kind, band(head, 1), tail, sub(body, 3, HEADER)
end

local function not_found()
    ngx.status = 404
    ngx.header["Content-Type"] = "text/plain; charset=utf-8"
    ngx.header["Cache-Control"] = NO_STORE
    ngx.header["Content-Length"] = 10
    if ngx.req.get_method() ~= "HEAD" then ngx.print("not found\n") end
    return ngx.exit(ngx.HTTP_OK)
end

local function method_allowed()
    local method = ngx.req.get_method()
    if method == "GET" or method == "HEAD" then return true end
    ngx.status = 405
    ngx.header["Allow"] = "GET, HEAD"
    ngx.header["Cache-Control"] = NO_STORE
    ngx.header["Content-Length"] = 0
    ngx.exit(ngx.HTTP_OK)
    return false
end

-- The token is the last segment of the path, right after /c/ or /o/ (under any
-- base_url path): /c/other/TOKEN is nobody's, even in a location wider than the shipped one.
local function token_of(uri, kind)
    return uri:match("/" .. kind .. "/([^/]*)$") or ""
end

-- A 302 to the signed URL. Printable ASCII without space, quotes or angle brackets only
-- (the pattern tokens.py checks): no header injection, no other host than the one signed.
function M.click()
    if not method_allowed() then return end
    local kind, https, tail = verify(token_of(ngx.var.uri, "c"))
    if kind ~= KIND_CLICK or tail == "" or find(tail, "[^!#-;=?-~]") then
        return not_found()
    end
    ngx.header["Cache-Control"] = NO_STORE
    ngx.header["Referrer-Policy"] = "no-referrer"
    ngx.header["X-Content-Type-Options"] = "nosniff"
    return ngx.redirect((https == 1 and "https://" or "http://") .. tail, 302)
end

function M.open()
    if not method_allowed() then return end
    local kind, _, tail = verify(token_of(ngx.var.uri, "o"))
    if kind ~= KIND_OPEN or tail ~= "" then
        return not_found()
    end
    ngx.header["Content-Type"] = "image/gif"
    ngx.header["Cache-Control"] = NO_STORE
    ngx.header["Pragma"] = "no-cache"
    ngx.header["Expires"] = "0"
    ngx.header["Referrer-Policy"] = "no-referrer"
    ngx.header["X-Content-Type-Options"] = "nosniff"
    ngx.header["Content-Length"] = #PIXEL
    if ngx.req.get_method() ~= "HEAD" then ngx.print(PIXEL) end
    return ngx.exit(ngx.HTTP_OK)
end

return M
