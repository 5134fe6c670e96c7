package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey marks a key that no implementation accepts. Every
// implementation checks keys with ValidateKey, so a key that works on one
// backend works on all of them.
var ErrInvalidKey = errors.New("invalid object key")

// MaxKeyLen is the longest key accepted, in bytes (the S3 limit).
const MaxKeyLen = 1024

// ValidateKey reports whether key is a valid object key: a non-empty,
// slash-separated relative path of at most MaxKeyLen bytes made of the
// characters [A-Za-z0-9._=/-], without a leading or trailing slash, without
// empty ("//"), "." or ".." segments, and without "..". The error wraps
// ErrInvalidKey and names the key.
func ValidateKey(key string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why)
	}
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case key[0] == '/':
		return bad("must be relative (no leading slash)")
	case key[len(key)-1] == '/':
		return bad("must not end with a slash")
	case strings.Contains(key, "//"):
		return bad(`contains an empty path segment ("//")`)
	case strings.Contains(key, ".."):
		return bad(`contains ".."`)
	}
	for i := 0; i < len(key); i++ {
		if !keyByte(key[i]) {
			if key[i] == '\\' {
				return bad("contains a backslash")
			}
			return bad(fmt.Sprintf("contains %q at byte %d; allowed are A-Z a-z 0-9 . _ = / -", key[i], i))
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "." {
			return bad(`contains a "." path segment`)
		}
	}
	return nil
}

// keyByte reports whether c may appear in a key.
func keyByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == '=', c == '/', c == '-':
		return true
	}
	return false
}
