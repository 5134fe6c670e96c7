package units

import "testing"

func TestBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		32 << 20: "32.0 MiB", 5 << 40: "5.0 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSizeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 1000, 1024, 1536 << 10, 32 << 20, 256 << 20, 3 << 30, 1<<30 + 1} {
		s := FormatSize(n)
		got, err := ParseSize(s)
		if err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
	if FormatSize(32<<20) != "32MiB" {
		t.Errorf("FormatSize(32MiB) = %q", FormatSize(32<<20))
	}
	for s, want := range map[string]int64{"1KB": 1000, " 2 MiB ": 2 << 20, "7B": 7, "3GB": 3e9, "2TiB": 2 << 40, "1TB": 1e12} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1", "1PB", "x", "9999999TiB", "1.5MiB", "99999999999GiB"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
}
