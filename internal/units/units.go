// Package units formats and parses the byte sizes kbackup prints and
// accepts: one formatter for every command's output, one parser for every
// size flag.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// Bytes renders a byte count for people, in binary units with one decimal:
// "512 B", "1.5 KiB", "32.0 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// FormatSize renders n the way ParseSize reads it, exactly: the largest
// binary unit that divides it ("32MiB", "1536KiB", "1000").
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParseSize parses a byte size: a plain number, or one with a suffix (KB,
// MB, GB, TB = powers of 1000; KiB, MiB, GiB, TiB = powers of 1024; B = 1).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: use a number of bytes, optionally with KiB, MiB, GiB, TiB, KB, MB, GB or TB", s)
	}
	return n * mult, nil
}
