-- The milter protocol, spoken by miltertest (the MTA side) to a running trackmilter.
-- Run: miltertest -D socket=unix:/path/milter.sock -D qid=QUEUEID -s protocol.lua
-- Each error() fails the run (non-zero exit); mt.echo lines are read back by the test.

conn = mt.connect(socket)
if conn == nil then error("mt.connect() failed") end
if mt.conninfo(conn, "localhost", "127.0.0.1") ~= nil then error("mt.conninfo() failed") end
mt.set_timeout(30)

-- MAIL FROM from a trusted network: outgoing
if mt.mailfrom(conn, "<sender@example.com>") ~= nil then error("mt.mailfrom() failed") end

-- an accepted recipient, then one Postfix refused (rejected recipients are negotiated)
-- miltertest sends macros only up to RCPT; Postfix has the queue id {i} there too
-- (milter_rcpt_macros), and libmilter keeps it visible at end of message.
mt.macro(conn, SMFIC_RCPT, "i", qid, "{rcpt_mailer}", "smtp", "{rcpt_host}", "mx.example.net",
         "{rcpt_addr}", "rcpt@example.net")
if mt.rcptto(conn, "<rcpt@example.net>") ~= nil then error("mt.rcptto() failed") end
mt.macro(conn, SMFIC_RCPT, "i", qid, "{rcpt_mailer}", "error", "{rcpt_host}", "5.7.1",
         "{rcpt_addr}", "Recipient refused by policy")
if mt.rcptto(conn, "<refused@example.net>") ~= nil then error("mt.rcptto(refused) failed") end

if mt.header(conn, "From", "sender@example.com") ~= nil then error("mt.header() failed") end
if mt.header(conn, "Message-ID", "<proto-" .. qid .. "@example.com>") ~= nil then error("mt.header() failed") end
if mt.header(conn, "MIME-Version", "1.0") ~= nil then error("mt.header() failed") end
if mt.header(conn, "Content-Type", "text/html; charset=us-ascii") ~= nil then error("mt.header() failed") end
-- trackmilter negotiates the end-of-headers step away (SMFIP_NOEOH): it does not need it.
if not mt.test_option(conn, SMFIP_NOEOH) then error("expected SMFIP_NOEOH to be negotiated") end
if mt.bodystring(conn, "<html><body><a href=\"https://example.com/x\">x</a></body></html>\r\n") ~= nil then
  error("mt.bodystring() failed")
end

if mt.eom(conn) ~= nil then error("mt.eom() failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE and mt.getreply(conn) ~= SMFIR_ACCEPT then
  error("unexpected reply at end of message")
end
if not mt.eom_check(conn, MT_HDRADD, "X-Trackmilter-ID") and
   not mt.eom_check(conn, MT_HDRINSERT, "X-Trackmilter-ID") then
  error("no X-Trackmilter-ID header added")
end
if not mt.eom_check(conn, MT_BODYCHANGE) then error("body not replaced") end
mt.echo("tracking-id=" .. mt.getheader(conn, "X-Trackmilter-ID", 0))

-- a second transaction on the same connection: a bounce (null sender) is never modified
if mt.mailfrom(conn, "<>") ~= nil then error("mt.mailfrom(<>) failed") end
mt.macro(conn, SMFIC_RCPT, "i", qid .. "B", "{rcpt_mailer}", "smtp", "{rcpt_host}", "mx.example.com",
         "{rcpt_addr}", "sender@example.com")
if mt.rcptto(conn, "<sender@example.com>") ~= nil then error("mt.rcptto() failed") end
if mt.header(conn, "Content-Type", "text/html") ~= nil then error("mt.header() failed") end
if mt.bodystring(conn, "<a href=\"https://example.com/y\">y</a>\r\n") ~= nil then error("body failed") end
if mt.eom(conn) ~= nil then error("mt.eom() failed") end
if mt.eom_check(conn, MT_BODYCHANGE) then error("null-sender body was modified") end
if mt.eom_check(conn, MT_HDRADD) or mt.eom_check(conn, MT_HDRINSERT) then
  error("null-sender message got a header")
end

mt.disconnect(conn)
mt.echo("protocol-ok")
