package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store"
)

func TestValidateKey(t *testing.T) {
	for _, key := range []string{
		"a", "a/b", "topics/orders/0/00000000000000000000.seg", "x=1/y-2_z.json", ".hidden", "a.", strings.Repeat("k", store.MaxKeyLen),
	} {
		if err := store.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
	}
	for _, tc := range []struct{ key, want string }{
		{"", "empty"},
		{"/a", "relative"},
		{"a/", "end with a slash"},
		{"a//b", `"//"`},
		{"..", `".."`},
		{"a/../b", `".."`},
		{"a..b", `".."`},
		{"./a", `"."`},
		{"a/./b", `"."`},
		{`a\b`, "backslash"},
		{"a b", "' '"},
		{"a~b", "'~'"},
		{"ü", "allowed are"},
		{"a\x00", "allowed are"},
		{strings.Repeat("k", store.MaxKeyLen+1), "longer than"},
	} {
		err := store.ValidateKey(tc.key)
		if !errors.Is(err, store.ErrInvalidKey) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey saying %s", tc.key, err, tc.want)
		}
	}
}
