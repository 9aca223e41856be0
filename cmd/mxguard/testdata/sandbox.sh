#!/bin/sh
# Drives `mxguard sandbox` the way a test suite in any language would: start
# it, wait for its one line, check domains against it, stop it.
#
#   sh sandbox.sh MXGUARD SPEC
#
# MXGUARD is the mxguard binary; SPEC is configs/sandbox/example.yaml, whose
# domains this script knows. It prints PASS and exits 0, or says what failed.
set -u
mxguard=$1 spec=$2

work=$(mktemp -d)
pid= watchdog=
cleanup() {
	for p in $pid $watchdog; do kill "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	echo "--- mxguard sandbox's log:"
	cat "$work/log"
	exit 1
}

# The sandbox writes its line into a FIFO: reading it waits for exactly
# that line, and ends early if the sandbox dies without it.
mkfifo "$work/out"
"$mxguard" sandbox --spec "$spec" >"$work/out" 2>"$work/log" &
pid=$!
exec 3<"$work/out"
# An upper bound, never reached when things work: a sandbox that is not
# ready by then is killed, which ends the read.
(
	sleeper=
	trap 'kill "$sleeper"; exit' TERM
	sleep 120 &
	sleeper=$!
	wait "$sleeper" && kill "$pid"
) >/dev/null 2>&1 3<&- &
watchdog=$!
IFS= read -r ready <&3 || fail "mxguard sandbox did not say it was ready"
kill "$watchdog"
watchdog=

case $ready in
dns=*" config="*) ;;
*) fail "the ready line is not 'dns=HOST:PORT config=PATH': $ready" ;;
esac
dns=${ready%% config=*}
dns=${dns#dns=}
config=${ready#* config=}
[ -f "$config" ] || fail "no configuration at $config"
out=$("$mxguard" validate --config "$config" 2>&1) || fail "mxguard validate: $out"

# check EXIT VERDICT [FLAGS] DOMAIN: `mxguard check --json` against the
# sandbox exits EXIT and reports VERDICT; the report stays in $out.
check() {
	want_exit=$1 want_verdict=$2
	shift 2
	out=$("$mxguard" check --config "$config" --json "$@" 2>&1)
	got=$?
	[ "$got" = "$want_exit" ] || fail "check $*: exit $got, want $want_exit: $out"
	case $out in
	*"\"verdict\":\"$want_verdict\""*) ;;
	*) fail "check $*: want verdict $want_verdict: $out" ;;
	esac
}
# has ID STATUS: the last report has check ID with STATUS.
has() {
	case $out in
	*"\"id\":\"$1\",\"status\":\"$2\""*) ;;
	*) fail "want $1=$2: $out" ;;
	esac
}

check 0 pass ok.sandbox.test
has mx.port25 pass
has spf.relay pass
has dmarc.record pass
check 2 defer refused.sandbox.test # its MX refuses connections
has mx.port25 fail
check 3 pass silent.sandbox.test # its MX never greets: inconclusive
has mx.port25 temperror
check 0 pass slow.sandbox.test
check 0 pass multiline.sandbox.test
check 2 defer nullmx.sandbox.test
has mx.records fail
check 3 pass servfail.sandbox.test
has mx.records temperror
check 0 pass --client-ip 127.0.3.1 --helo client.sandbox.test ok.sandbox.test
has client.fcrdns pass
has helo.matches-ptr pass
check 0 pass --self
has client.fcrdns pass

# dns= alone is enough for what needs no probe.
out=$("$mxguard" check --resolver "$dns" --json nx.sandbox.test 2>&1)
got=$?
[ "$got" = 2 ] || fail "check --resolver $dns nx.sandbox.test: exit $got, want 2: $out"
has mx.records fail

kill -TERM "$pid"
wait "$pid"
got=$?
pid=
[ "$got" = 0 ] || fail "mxguard sandbox exited $got after SIGTERM, want 0"
[ ! -e "$config" ] || fail "$config is still there after the sandbox stopped"
[ ! -e "${config%/*}" ] || fail "${config%/*} is still there after the sandbox stopped"
echo PASS
