package kafkaconn

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// redacted stands in for a set secret wherever one could be printed.
const redacted = "[REDACTED]"

// Secret is a string that is never printed: String, Format (every fmt verb,
// including %#v and %q), LogValue (log/slog), MarshalJSON and MarshalText
// all yield "[REDACTED]" when it is set and "" when it is empty, so an
// operator can still tell a missing secret from a present one. Use Reveal
// where the plain text is really needed (handing it to the SASL mechanism).
type Secret string

// Reveal returns the secret's plain text. Call it only where the secret is
// sent to the party that checks it, never to build a message or log line.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer with the redacted form.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer with the redacted form, quoted.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// Format implements fmt.Formatter so that every verb (%v, %+v, %#v, %s, %q,
// %x, ...) prints the redacted form; without it %x or %q of the underlying
// string kind would print the plain text.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		_, _ = fmt.Fprintf(f, "%q", s.String())
	case 'v':
		if f.Flag('#') {
			_, _ = io.WriteString(f, s.GoString())
			return
		}
		_, _ = io.WriteString(f, s.String())
	default:
		_, _ = io.WriteString(f, s.String())
	}
}

// LogValue implements slog.LogValuer with the redacted form, so the secret
// stays hidden under every slog handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler with the redacted form.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText implements encoding.TextMarshaler with the redacted form, for
// encoders (YAML, TOML, slog's text handler) that prefer it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
