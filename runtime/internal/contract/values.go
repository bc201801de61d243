package contract

import (
	"strconv"
	"strings"
	"time"
)

// ParseBool applies the shared boolean syntax: case-insensitive, surrounding whitespace
// trimmed; true is 1|true|yes|on, false is 0|false|no|off or empty. Anything else is an
// error naming `name`.
func ParseBool(name, value string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "", "0", "false", "no", "off":
		return false, nil
	}
	return false, errorf(CodeBadBool, "%s must be one of 1/true/yes/on or 0/false/no/off, not %s", name, quote(value, 20))
}

// ParseDuration applies the shared duration syntax: Go time.ParseDuration ("500ms", "30s",
// "1h30m") or a bare non-negative integer meaning seconds. Empty means def. Negative or
// unparsable values are an error naming `name`.
func ParseDuration(name, value string, def time.Duration) (time.Duration, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return def, nil
	}
	bad := errorf(CodeBadDuration, "%s must be a duration such as 500ms, 30s, 2m or a number of seconds, not %s", name, quote(value, 20))
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(time.Duration(1<<63-1)/time.Second) {
			return 0, bad
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, bad
	}
	return d, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
