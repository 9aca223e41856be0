package smtptest

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMSigner signs messages for a domain, as a relay's DKIM signer
// (OpenDKIM, rspamd) does, for tests of what receivers will verify.
type DKIMSigner struct {
	Domain, Selector string
	key              crypto.Signer
	public           []byte
	kind             string
}

// NewDKIMSigner makes a signer for domain with an RSA key of bits, or an
// ed25519 key when bits is 0. RSA keys are made once per size and process:
// making one takes a while. Publish its Record at KeyName (Zone.DKIMKey).
func NewDKIMSigner(domain, selector string, bits int) (*DKIMSigner, error) {
	s := &DKIMSigner{Domain: domain, Selector: selector, kind: "rsa"}
	if bits == 0 {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s.key, s.public, s.kind = key, pub, "ed25519"
		return s, nil
	}
	key, err := rsaKey(bits)
	if err != nil {
		return nil, err
	}
	if s.public, err = x509.MarshalPKIXPublicKey(&key.PublicKey); err != nil {
		return nil, err
	}
	s.key = key
	return s, nil
}

var rsaKeys = struct {
	sync.Mutex
	m map[int]*rsa.PrivateKey
}{m: map[int]*rsa.PrivateKey{}}

func rsaKey(bits int) (*rsa.PrivateKey, error) {
	rsaKeys.Lock()
	defer rsaKeys.Unlock()
	if k, ok := rsaKeys.m[bits]; ok {
		return k, nil
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, err
	}
	rsaKeys.m[bits] = k
	return k, nil
}

// KeyName is where receivers look the key up: SELECTOR._domainkey.DOMAIN.
func (s *DKIMSigner) KeyName() string { return s.Selector + "._domainkey." + s.Domain }

// Record is the key's TXT record (RFC 6376 section 3.6.1).
func (s *DKIMSigner) Record() string {
	return "v=DKIM1; k=" + s.kind + "; p=" + base64.StdEncoding.EncodeToString(s.public)
}

// DKIMKey publishes the signer's key record.
func (z *Zone) DKIMKey(s *DKIMSigner) *Zone { return z.TXT(s.KeyName(), s.Record()) }

// Sign returns message (RFC 5322, CRLF line ends) with a DKIM-Signature
// field on top, relaxed/simple, over headerKeys (empty: go-msgauth's
// choice, which includes From).
func (s *DKIMSigner) Sign(message string, headerKeys ...string) (string, error) {
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(message), &dkim.SignOptions{
		Domain: s.Domain, Selector: s.Selector, Signer: s.key, HeaderKeys: headerKeys,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationSimple,
	})
	return b.String(), err
}

// SignMilterMessage returns m with the DKIM-Signature field a signer placed
// before the milter would have added, first in its headers.
func (s *DKIMSigner) SignMilterMessage(m MilterMessage, headerKeys ...string) (MilterMessage, error) {
	if len(m.Headers) == 0 {
		return m, fmt.Errorf("smtptest: a message without header fields cannot be signed (From is required)")
	}
	var raw strings.Builder
	for _, h := range m.Headers {
		fmt.Fprintf(&raw, "%s: %s\r\n", h[0], h[1])
	}
	raw.WriteString("\r\n" + m.Body)
	signed, err := s.Sign(raw.String(), headerKeys...)
	if err != nil {
		return m, err
	}
	field, _, _ := strings.Cut(signed, "\r\n"+m.Headers[0][0]+":")
	value := strings.TrimPrefix(field, "DKIM-Signature: ")
	m.Headers = append([][2]string{{"DKIM-Signature", value}}, m.Headers...)
	return m, nil
}
