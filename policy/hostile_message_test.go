package policy

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// The DKIM verifier meets messages made to exhaust it: these judge them
// in bounded memory and CPU (third_party/go-msgauth/PATCHES.md). The
// bounds are far above what linear work costs and far below what the
// quadratic work of unpatched go-msgauth cost.

// edSigner signs with an ed25519 key published in the rig's zone, with
// the canonicalizations given (smtptest's signer is relaxed/simple only).
type edSigner struct {
	domain, selector string
	key              ed25519.PrivateKey
}

func (r *messageRig) publishEd25519(t *testing.T, domain, selector string) edSigner {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.z.TXT(selector+"._domainkey."+domain, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	return edSigner{domain, selector, key}
}

// sign returns message with a signature of c (header/body) on top, over
// headerKeys (none: go-msgauth's choice).
func (s edSigner) sign(t *testing.T, message string, c [2]dkim.Canonicalization, headerKeys ...string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(message), &dkim.SignOptions{
		Domain: s.domain, Selector: s.selector, Signer: s.key, HeaderKeys: headerKeys,
		HeaderCanonicalization: c[0], BodyCanonicalization: c[1],
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// cost is what judging a message took: octets allocated and CPU time of
// the process (other tests do not run meanwhile).
type cost struct {
	alloc uint64
	cpu   time.Duration
}

func (c cost) String() string {
	return fmt.Sprintf("%.1f MiB allocated, %v CPU", float64(c.alloc)/(1<<20), c.cpu.Round(time.Millisecond))
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// judge feeds message to a Message in the 64 KiB chunks a milter gets,
// evaluates it for sender and returns the report and its cost.
func (r *messageRig) judge(t *testing.T, sender, message string) (*Report, cost) {
	t.Helper()
	req := Request{Sender: sender}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := evaluateDNSOnly(ctx, r.e, req)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cpu := cpuTime(t)
	m := r.e.NewMessage()
	for p := message; len(p) > 0; {
		n := min(len(p), 65535)
		m.Write([]byte(p[:n]))
		p = p[n:]
	}
	rep := r.e.EvaluateMessage(ctx, env, req, m)
	c := cost{cpu: cpuTime(t) - cpu}
	runtime.ReadMemStats(&after)
	c.alloc = after.TotalAlloc - before.TotalAlloc
	return rep, c
}

// A body of millions of empty lines before its text: upstream
// re-canonicalized the pending line ends at every write (4 MiB of CRLF:
// seconds and gigabytes per signature) and held them all in memory.
func TestBodyOfEmptyLinesIsVerifiedInBoundedMemory(t *testing.T) {
	r := newMessageRig(t)
	r.e.cfg.Message.MaxBytes = 16 << 20
	r.author("blank.test", "v=DMARC1; p=reject")
	s := r.publishEd25519(t, "blank.test", "s1")
	const run = 4 << 20
	for _, c := range [][2]dkim.Canonicalization{
		{dkim.CanonicalizationRelaxed, dkim.CanonicalizationSimple},
		{dkim.CanonicalizationRelaxed, dkim.CanonicalizationRelaxed},
	} {
		t.Run(string(c[1]), func(t *testing.T) {
			msg := plainMessage("a@blank.test")
			msg = msg[:len(msg)-len("Hello.\r\n")] + strings.Repeat("\r\n", run/2) + "the end\r\n" + strings.Repeat("\r\n", run/2)
			rep, cost := r.judge(t, "a@blank.test", s.sign(t, msg, c))
			t.Logf("%d octets of empty lines: %s", run, cost)
			if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
				t.Fatalf("dkim.signature %s: %s", st, d)
			}
			// The message is 4 MiB, copied a few times on its way (16 MiB
			// allocated in all); upstream allocated 9 GiB for simple and
			// 61 MiB for relaxed, which held the run.
			if cost.alloc > 40<<20 {
				t.Errorf("verifying allocated %d octets", cost.alloc)
			}
			if cost.cpu > 3*time.Second {
				t.Errorf("verifying took %v of CPU", cost.cpu)
			}
		})
	}
}

// A signature whose h= names one field 50000 times, over 50000 fields of
// that name, all within the 1 MiB header bound: upstream scanned every
// field for each h= entry.
func TestManyFieldsSignedManyTimesAreJudgedInBoundedTime(t *testing.T) {
	r := newMessageRig(t)
	r.author("fields.test", "v=DMARC1; p=reject")
	s := r.publishEd25519(t, "fields.test", "s1")
	const n = 50000
	keys := make([]string, 0, n+1)
	var extra strings.Builder
	for i := range n {
		fmt.Fprintf(&extra, "X-F: %d\r\n", i%10)
		keys = append(keys, "X-F")
	}
	keys = append(keys, "From")
	msg := plainMessage("a@fields.test", strings.TrimSuffix(extra.String(), "\r\n"))
	signed := s.sign(t, msg, [2]dkim.Canonicalization{dkim.CanonicalizationRelaxed, dkim.CanonicalizationRelaxed}, keys...)
	rep, cost := r.judge(t, "a@fields.test", signed)
	t.Logf("%d fields, h= of %d entries: %s", n, len(keys), cost)
	if st, d := statusOf(rep, DKIMSignature); st != StatusPass {
		t.Fatalf("dkim.signature %s: %s", st, d)
	}
	// Linear work takes some 40 ms, upstream took 16 s.
	if cost.cpu > 3*time.Second {
		t.Errorf("verifying took %v of CPU", cost.cpu)
	}
	if cost.alloc > 64<<20 {
		t.Errorf("verifying allocated %d octets", cost.alloc)
	}
}

// The canonical body (RFC 6376 sections 3.4.3 and 3.4.4) whatever the
// chunks it arrives in: the body hash of a signature made in chunks is
// the hash of the whole body canonicalized at once, as go-msgauth did
// before its canonicalizers were made to stream.
func TestBodyCanonicalizationDoesNotDependOnChunks(t *testing.T) {
	bodies := []string{
		"", "\r\n", "\r\n\r\n\r\n", "\n\n\n", "\r", "\r\r", "\r\n\r", "\r\r\n", "\n\r",
		"a", "a\r\n", "a\r\n\r\n", "a\n\n", "a\r", "a\r\r\n\r\n", "a\rb\r\n", "a\r\n\r\rb",
		"a \r\n", "a \t \r\n\r\n", " \r\n \r\n", "\t", "a  b\t\tc \r\n", " a\r\n\t b \r\n",
		"a\r \nb", "a\r\n \r\n\tb", "a \rb", "a\n \n \n", "x\r\n\r\n \t\r\n\r\ny \r\n \r\n",
		strings.Repeat("\r\n", 300) + "z" + strings.Repeat(" \r\n", 300),
		strings.Repeat("\r", 200) + "z" + strings.Repeat("\r\r\n", 200),
		strings.Repeat("line \t\r\n\r\n\n", 50) + "\r",
	}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	for range 200 { // mostly line ends and whitespace
		const alphabet = "\r\n\r\n\r\n \t\r\nxy"
		b := make([]byte, rnd.IntN(100))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		bodies = append(bodies, string(b))
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bh := regexp.MustCompile(`bh=([^;]*);`)
	for _, c := range []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed} {
		for _, body := range bodies {
			want := sha256.Sum256([]byte(canonicalBody(c, body)))
			for _, size := range []int{1, 2, 3, 5, 7, 64, 1 << 16} {
				s, err := dkim.NewSigner(&dkim.SignOptions{Domain: "c.test", Selector: "s", Signer: key, BodyCanonicalization: c})
				if err != nil {
					t.Fatal(err)
				}
				s.Write([]byte("From: a@c.test\r\n\r\n"))
				for p := body; len(p) > 0; {
					n := min(len(p), size)
					s.Write([]byte(p[:n]))
					p = p[n:]
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				m := bh.FindStringSubmatch(s.Signature())
				got := strings.Join(strings.Fields(m[1]), "")
				if got != base64.StdEncoding.EncodeToString(want[:]) {
					t.Errorf("%s body %q in chunks of %d: body hash %s, want that of %q", c, body, size, got, canonicalBody(c, body))
				}
			}
		}
	}
}

// canonicalBody is body canonicalized by c at once: a bare LF is a line
// end (CRLF); simple drops the empty lines at the end and ends the body
// with one CRLF. relaxed also makes each run of SP and HTAB within a line
// one SP, drops it at the end of a line, and ends a non-empty body with
// CRLF; as go-msgauth always did, a CR without LF counts with the line
// ends around it, so whitespace before it is dropped and it is dropped at
// the end of the body.
func canonicalBody(c dkim.Canonicalization, body string) string {
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		if body[i] == '\n' && (i == 0 || body[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(body[i])
	}
	body = b.String()
	if c == dkim.CanonicalizationSimple {
		for strings.HasSuffix(body, "\r\n") {
			body = body[:len(body)-2]
		}
		return body + "\r\n"
	}
	b.Reset()
	ends, wsp := "", false
	for i := 0; i < len(body); i++ {
		switch ch := body[i]; ch {
		case ' ', '\t':
			wsp = true
		case '\r', '\n':
			ends += string(ch)
			wsp = false
		default:
			b.WriteString(ends)
			if wsp {
				b.WriteByte(' ')
			}
			b.WriteByte(ch)
			ends, wsp = "", false
		}
	}
	if b.Len() > 0 {
		b.WriteString("\r\n")
	}
	return b.String()
}
