package config

import (
	"errors"
	"fmt"
	"strconv"
)

// Command-line flags that override configuration keys go through these, so
// that a flag accepts exactly what its key accepts, with the same messages.

// ParseServer checks a resolver.servers entry: an IP address, or IP:port.
func ParseServer(s string) error {
	if !validServer(s) {
		return fmt.Errorf("%q is not an IP address or IP:port", s)
	}
	return nil
}

// ParsePort parses a probe.port value.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("must be 1-65535")
	}
	return uint16(n), nil
}

// Describe formats a message about key the way the loader's errors are:
// "FILE:LINE: key: message", the line being where the file set key.
func (c *Config) Describe(key, format string, args ...any) string {
	return c.errorAt(key, format, args...).Error()
}
