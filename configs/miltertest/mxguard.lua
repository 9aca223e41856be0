-- mxguard through miltertest (Debian package miltertest), a libmilter-based
-- stand-in for an MTA: an independent check of what mxguard answers.
--
--   miltertest -D socket=inet:8891@127.0.0.1 -s configs/miltertest/mxguard.lua
--
-- against an mxguard serving the test sandbox (cmd/mxguard's
-- TestMiltertest sets it up, with mx.targets: hold). mxguard negotiates no
-- connect, body, end-of-header or unknown steps, and takes HELO, MAIL FROM
-- and header fields without answering (SMFIP_NR_*): a script must not call
-- mt.conninfo, mt.bodystring or mt.eoh, and must not wait for a reply to
-- mt.helo, mt.mailfrom or mt.header.

local function check(ok, what)
	if not ok then
		error(what, 2)
	end
end

-- transaction plays one message from a good sending host and returns the
-- connection after end of message, or after a refused recipient.
local function transaction(sender, subject)
	local conn = mt.connect(socket, 5, 0.5)
	check(conn ~= nil, "mt.connect(" .. socket .. ") failed")
	check(mt.negotiate(conn, nil, nil, nil) == nil, "mt.negotiate() failed")
	check(mt.test_option(conn, SMFIP_NOCONNECT), "mxguard did not skip the connect step")
	check(mt.test_option(conn, SMFIP_NR_HELO), "mxguard answers HELO")
	check(mt.test_action(conn, SMFIF_ADDHDRS), "mxguard did not ask to add headers")
	check(mt.helo(conn, "mail.good.test") == nil, "mt.helo() failed")
	mt.macro(conn, SMFIC_MAIL, "i", "MT" .. subject, "j", "mta.lab.test",
		"{client_addr}", "127.0.3.1", "{client_name}", "mail.good.test")
	check(mt.mailfrom(conn, sender) == nil, "mt.mailfrom() failed")
	check(mt.rcptto(conn, "<user@remote.example>") == nil, "mt.rcptto() failed")
	if mt.getreply(conn) ~= SMFIR_CONTINUE then
		return conn, "refused"
	end
	check(mt.header(conn, "From", sender) == nil, "mt.header() failed")
	check(mt.header(conn, "Subject", subject) == nil, "mt.header() failed")
	check(mt.header(conn, "X-MXGuard", "pass; domain=forged.example") == nil, "mt.header() failed")
	check(mt.eom(conn) == nil, "mt.eom() failed")
	check(mt.getreply(conn) == SMFIR_CONTINUE, "end of message: not continue")
	return conn, "eom"
end

mt.set_timeout(30)

-- pass: the header, and the forged one removed
local conn, stage = transaction("<a@ok.test>", "pass")
check(stage == "eom", "pass: refused at RCPT")
check(mt.eom_check(conn, MT_HDRADD, "X-MXGuard", "pass; domain=ok.test; ip=127.0.3.1"), "pass: no pass header")
check(mt.eom_check(conn, MT_HDRDELETE, "X-MXGuard"), "pass: the forged header was not removed")
check(not mt.eom_check(conn, MT_QUARANTINE), "pass: quarantined")
mt.disconnect(conn)

-- defer: a 451 reply code at RCPT
conn, stage = transaction("<a@refused.test>", "defer")
check(stage == "refused", "defer: the recipient was not refused")
mt.disconnect(conn)

-- hold: the header and quarantine with mxguard's reason
conn, stage = transaction("<a@literal-mx.test>", "hold")
check(stage == "eom", "hold: refused at RCPT")
check(mt.eom_check(conn, MT_HDRADD, "X-MXGuard", "hold; domain=literal-mx.test; ip=127.0.3.1; mx.targets=fail"), "hold: no hold header")
check(mt.eom_check(conn, MT_QUARANTINE), "hold: not quarantined")
mt.disconnect(conn)

mt.echo("mxguard: pass, defer and hold as expected")
