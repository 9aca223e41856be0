// Package sdnotify tells systemd how the service is doing (sd_notify(3)):
// datagrams of KEY=VALUE lines to the socket named by $NOTIFY_SOCKET. It is
// the whole protocol a Type=notify service needs, without a dependency.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends state changes to systemd. A nil Notifier (not started by
// systemd) sends nothing, so callers need no checks.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns the Notifier for $NOTIFY_SOCKET, or nil when it is unset.
func FromEnv() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: only unix socket paths are supported", path)
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, nil
}

// Send sends one state message, e.g. "READY=1\nSTATUS=serving".
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	return nil
}

// Ready says the service is up (or back up after a reload).
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1\nSTATUS=" + oneLine(status))
}

// Reloading says a reload has begun. systemd (253 and later) wants the
// monotonic time with it, to tell this reload from an older one.
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	usec := ts.Sec*1_000_000 + ts.Nsec/1000
	return n.Send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10) + "\nSTATUS=reloading the configuration")
}

// Stopping says the service is shutting down.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1\nSTATUS=" + oneLine(status))
}

// Watchdog is a keep-alive ping; systemd restarts the service when they
// stop coming within WatchdogSec.
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// WatchdogInterval is how often to ping: half of WatchdogSec, as sd_notify(3)
// advises, or 0 when the watchdog is off or meant for another process.
func WatchdogInterval() (time.Duration, error) {
	s := os.Getenv("WATCHDOG_USEC")
	if s == "" {
		return 0, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	usec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || usec <= 0 {
		return 0, errors.New("WATCHDOG_USEC " + strconv.Quote(s) + " is not a positive number")
	}
	return time.Duration(usec) * time.Microsecond / 2, nil
}

// oneLine keeps a status to its one line: a newline would start a new
// assignment.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
