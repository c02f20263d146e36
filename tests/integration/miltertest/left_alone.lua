-- Links and parts trackmilter must leave alone while still tracking the message, spoken by
-- miltertest (the MTA side) to a running trackmilter with [tracking] open_pixel = false.
-- Run: miltertest -D socket=unix:/path/milter.sock -D qid=QUEUEID -s left_alone.lua
-- 1. only links whose token would be longer than the trackers accept (3,500 characters,
--    5 MB): nothing to rewrite, the body stays, the tracking header is added;
-- 2. a part whose charset is the byte 0xFF: likewise.
-- Bodies stay small where they are replaced: Debian's miltertest crashes ("stack smashing
-- detected") reading a replacement body longer than about 800 bytes; a rewritten message
-- with long links is tested through Postfix (test_milter_postfix_left_alone.py).

conn = mt.connect(socket)
if conn == nil then error("mt.connect() failed") end
if mt.conninfo(conn, "localhost", "127.0.0.1") ~= nil then error("mt.conninfo() failed") end
mt.set_timeout(60)

local function transaction(id, content_type, body)
  if mt.mailfrom(conn, "<sender@example.com>") ~= nil then error("mt.mailfrom() failed") end
  mt.macro(conn, SMFIC_RCPT, "i", id, "{rcpt_mailer}", "smtp", "{rcpt_host}", "mx.example.net",
           "{rcpt_addr}", "rcpt@example.net")
  if mt.rcptto(conn, "<rcpt@example.net>") ~= nil then error("mt.rcptto() failed") end
  if mt.header(conn, "From", "sender@example.com") ~= nil then error("mt.header() failed") end
  if mt.header(conn, "MIME-Version", "1.0") ~= nil then error("mt.header() failed") end
  if mt.header(conn, "Content-Type", content_type) ~= nil then error("mt.header() failed") end
  -- libmilter takes at most 64 KB a command: the body goes in chunks, as MTAs send it.
  local chunk = 65000
  for i = 1, #body, chunk do
    if mt.bodystring(conn, string.sub(body, i, i + chunk - 1)) ~= nil then
      error("mt.bodystring() failed")
    end
  end
  if mt.eom(conn) ~= nil then error("mt.eom() failed") end
  local reply = mt.getreply(conn)
  if reply ~= SMFIR_CONTINUE and reply ~= SMFIR_ACCEPT then
    error("unexpected reply at end of message")
  end
  if not mt.eom_check(conn, MT_HDRADD, "X-Trackmilter-ID") and
     not mt.eom_check(conn, MT_HDRINSERT, "X-Trackmilter-ID") then
    error("no X-Trackmilter-ID header added to " .. id)
  end
end

local long = "https://example.com/long?" .. string.rep("q", 3500 - 25)
local huge = "https://example.com/huge?" .. string.rep("h", 5 * 1024 * 1024)
local body = "<html><body>\r\n" ..
  "<p><a href=\"" .. long .. "\">long</a></p>\r\n" ..
  "<p><a href=\"" .. huge .. "\">huge</a></p>\r\n" ..
  "</body></html>\r\n"
transaction(qid, "text/html; charset=us-ascii", body)
if mt.eom_check(conn, MT_BODYCHANGE) then error("links too long to sign were modified") end
mt.echo("tracking-id=" .. mt.getheader(conn, "X-Trackmilter-ID", 0))

transaction(qid .. "C", "text/html; charset=\"\255\"",
            "<html><body><a href=\"https://example.com/x\">x</a></body></html>\r\n")
if mt.eom_check(conn, MT_BODYCHANGE) then error("a part in an unknown charset was modified") end

mt.disconnect(conn)
mt.echo("left-alone-ok")
