// Package jsonobj reads and writes the JSON objects that restores and
// replays keep in a store (docs/FORMAT.md §10): encoded in one piece,
// decoded strictly (an unknown field is an error, not silently dropped).
package jsonobj

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kbackup/kbackup/store"
)

// Put encodes v and writes it to key with opts (IfNotExists for a
// create-if-absent).
func Put(ctx context.Context, st store.Store, key string, v any, opts store.PutOptions) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := st.Put(ctx, key, bytes.NewReader(b), int64(len(b)), opts); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// Get reads key into v strictly; found is false if it does not exist.
func Get(ctx context.Context, st store.Store, key string, v any) (found bool, err error) {
	b, err := store.Get(ctx, st, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}
