package smtptest_test

import (
	"fmt"
	"net"
	"net/smtp"
	"strconv"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/smtptest"
)

// A domain with two MX hosts: one accepts mail, the other refuses
// connections. The code under test resolves through sb.DNS.Addr and
// connects to sb.Port instead of 25.
func Example() {
	sb, err := smtptest.NewSandbox()
	if err != nil {
		panic(err)
	}
	defer sb.Close()
	mx, err := sb.Serve("127.0.0.25", smtptest.Accept)
	if err != nil {
		panic(err)
	}
	if err := sb.Closed("127.0.0.26"); err != nil {
		panic(err)
	}
	sb.Zone.MX("example.test", 10, "mx1.example.test").A("mx1.example.test", "127.0.0.25").
		MX("example.test", 20, "mx2.example.test").A("mx2.example.test", "127.0.0.26")

	// What a mail client does: MX lookup, address lookup, SMTP.
	r, _, err := new(dns.Client).Exchange(new(dns.Msg).SetQuestion("example.test.", dns.TypeMX), sb.DNS.Addr)
	if err != nil {
		panic(err)
	}
	for _, rr := range r.Answer {
		host := rr.(*dns.MX).Mx
		a, _, err := new(dns.Client).Exchange(new(dns.Msg).SetQuestion(host, dns.TypeA), sb.DNS.Addr)
		if err != nil {
			panic(err)
		}
		addr := net.JoinHostPort(a.Answer[0].(*dns.A).A.String(), strconv.Itoa(int(sb.Port)))
		err = smtp.SendMail(addr, nil, "sender@example.org", []string{"user@example.test"}, []byte("Subject: hi\r\n\r\nhello\r\n"))
		fmt.Printf("%s: %v\n", host, err != nil)
	}
	fmt.Printf("delivered %d message(s), from %s\n", len(mx.Messages()), mx.Messages()[0].From)
	fmt.Printf("DNS queries: %d\n", sb.DNS.Queries())
	// Output:
	// mx1.example.test.: false
	// mx2.example.test.: true
	// delivered 1 message(s), from sender@example.org
	// DNS queries: 3
}
