package manifest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// ProbesPrefix holds the scratch objects of ProbeConditionalCreate
// (docs/FORMAT.md, "Key layout"). Readers ignore it.
const ProbesPrefix = "probes/"

// ErrNoConditionalCreate reports a store that accepted a second
// create-if-absent of the same key: it ignores If-None-Match (some
// S3-compatible servers do), so the format's fencing cannot work there.
var ErrNoConditionalCreate = errors.New("the store does not honour conditional creates (If-None-Match: *)")

// ProbeConditionalCreate checks that st honours store.PutOptions.IfNotExists,
// on which every fencing rule of the format rests (docs/FORMAT.md, "Writer
// rules"): it creates a fresh scratch key under ProbesPrefix with
// IfNotExists twice; the second create must fail with store.ErrExists. The
// key is deleted afterwards. A writer MUST run it before its first commit
// and refuse to write when it fails.
func ProbeConditionalCreate(ctx context.Context, st store.Store) error {
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("probe conditional create: %w", err)
	}
	key := ProbesPrefix + "conditional-create-" + hex.EncodeToString(nonce[:])
	put := func(body string) error {
		return st.Put(ctx, key, bytes.NewReader([]byte(body)), int64(len(body)), store.PutOptions{IfNotExists: true})
	}
	if err := put("first"); err != nil {
		return fmt.Errorf("probe conditional create on %s: first create of %s: %w", st, key, err)
	}
	second := put("second")
	if derr := st.Delete(ctx, key); derr != nil && second == nil {
		second = derr
	}
	switch {
	case errors.Is(second, store.ErrExists):
		return nil
	case second == nil:
		return fmt.Errorf("%w: %s accepted a second create of %s; two writers could both commit the same offsets. "+
			"Use a store that supports S3 conditional writes (AWS S3, MinIO; check your server's version)", ErrNoConditionalCreate, st, key)
	default:
		return fmt.Errorf("probe conditional create on %s: second create of %s: %w", st, key, second)
	}
}
