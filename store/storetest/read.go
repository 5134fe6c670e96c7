package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
)

func readRange(t *testing.T, s store.Store, key string, off, length int64) ([]byte, error) {
	t.Helper()
	rc, err := s.GetRange(t.Context(), key, off, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func testGetRange(t *testing.T, s store.Store, p string) {
	key := p + "digits"
	data := []byte("0123456789")
	put(t, s, key, data)
	for _, tc := range []struct {
		name        string
		off, length int64
		want        string
	}{
		{"whole", 0, -1, "0123456789"},
		{"start", 0, 3, "012"},
		{"middle", 3, 4, "3456"},
		{"to-end", 6, -1, "6789"},
		{"exact-end", 6, 4, "6789"},
		{"past-end", 7, 100, "789"},
		{"last-byte", 9, 1, "9"},
		{"zero-length", 4, 0, ""},
		{"off-eq-size", 10, -1, ""},
		{"off-eq-size-length", 10, 5, ""},
	} {
		got, err := readRange(t, s, key, tc.off, tc.length)
		if err != nil {
			t.Errorf("%s: GetRange(%d, %d): %v", tc.name, tc.off, tc.length, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s: GetRange(%d, %d) = %q, want %q", tc.name, tc.off, tc.length, got, tc.want)
		}
	}
	if _, err := readRange(t, s, key, 11, -1); err == nil {
		t.Error("GetRange with off beyond the end succeeded")
	}
	// Zero-length object: off 0 is the end.
	put(t, s, p+"empty", nil)
	for _, length := range []int64{-1, 0, 10} {
		got, err := readRange(t, s, p+"empty", 0, length)
		if err != nil || len(got) != 0 {
			t.Errorf("empty object GetRange(0, %d) = %q, %v; want empty", length, got, err)
		}
	}
	if _, err := readRange(t, s, p+"empty", 1, -1); err == nil {
		t.Error("empty object GetRange(1, -1) succeeded")
	}
}

func testNotFound(t *testing.T, s store.Store, p string) {
	ctx := t.Context()
	key := p + "missing"
	if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat missing: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRange(ctx, key, 0, -1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRange missing: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRange(ctx, key, 5, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRange(5, 10) missing: err = %v, want ErrNotFound", err)
	}
	if _, err := store.Get(ctx, s, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get missing: err = %v, want ErrNotFound", err)
	}
	// A key prefix ("directory") is not an object.
	put(t, s, p+"dir/obj", []byte("x"))
	if _, err := s.Stat(ctx, p+"dir"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat of a key prefix: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRange(ctx, p+"dir", 0, -1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRange of a key prefix: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, p+"dir/obj/deeper"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat below an object: err = %v, want ErrNotFound", err)
	}
}

func testStat(t *testing.T, s store.Store, p string) {
	key := p + "k"
	before := time.Now().Add(-time.Minute)
	put(t, s, key, []byte("hello"))
	info, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != key || info.Size != 5 {
		t.Errorf("Stat = %+v, want key %q size 5", info, key)
	}
	if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("Stat ModTime = %v, not around now", info.ModTime)
	}
	put(t, s, p+"empty", nil)
	if info, err := s.Stat(t.Context(), p+"empty"); err != nil || info.Size != 0 {
		t.Errorf("Stat empty = %+v, %v", info, err)
	}
}

func testInvalidKeys(t *testing.T, s store.Store, p string) {
	ctx := t.Context()
	for _, key := range []string{"", "/abs", p + "a/../b", p + "a//b", p + `a\b`, p + "a b", p + "trailing/", p + "x~y", p + "a/./b"} {
		if err := s.Put(ctx, key, strings.NewReader("x"), 1, store.PutOptions{}); err == nil {
			t.Errorf("Put(%q) succeeded, want an error", key)
		}
		if _, err := s.Stat(ctx, key); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Stat(%q) err = %v, want an invalid-key error", key, err)
		}
	}
	assertListed(t, s, store.ListOptions{Prefix: p}, nil)
}

func testDelete(t *testing.T, s store.Store, p string) {
	ctx := t.Context()
	key := p + "a/b/c"
	put(t, s, key, []byte("x"))
	put(t, s, p+"a/keep", []byte("y"))
	for range 2 { // idempotent
		if err := s.Delete(ctx, key); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after Delete, Stat err = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, p+"never/existed"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	assertListed(t, s, store.ListOptions{Prefix: p}, []string{p + "a/keep"})
	assertEntries(t, s, store.ListOptions{Prefix: p + "a/", Delimiter: "/"}, []string{p + "a/keep"})
	// The key can be created again, also with IfNotExists.
	if err := s.Put(ctx, key, strings.NewReader("z"), 1, store.PutOptions{IfNotExists: true}); err != nil {
		t.Errorf("re-create after Delete: %v", err)
	}
}

func testNestedKeys(t *testing.T, s store.Store, p string) {
	keys := []string{
		p + "topics/orders/0/00000000000000000000.seg",
		p + "topics/orders/0/00000000000000001000.seg",
		p + "topics/orders/1/00000000000000000000.seg",
		p + "topics/orders=v2/x",
		p + "topics/payments/0/manifest_v1.json",
	}
	for _, k := range keys {
		put(t, s, k, []byte(k))
	}
	for _, k := range keys {
		if got := get(t, s, k); string(got) != k {
			t.Errorf("Get(%q) = %q", k, got)
		}
	}
	assertListed(t, s, store.ListOptions{Prefix: p}, keys)
	assertListed(t, s, store.ListOptions{Prefix: p + "topics/orders/0/"}, keys[:2])
}

func testCanceled(t *testing.T, s store.Store, p string) {
	put(t, s, p+"exists", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	key := p + "k"
	err := s.Put(ctx, key, strings.NewReader("abc"), 3, store.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put with canceled context: err = %v, want context.Canceled", err)
	}
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled Put stored the object (Stat err = %v)", err)
	}
	if _, err := s.GetRange(ctx, p+"exists", 0, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("GetRange with canceled context: err = %v, want context.Canceled", err)
	}
	if _, err := s.Stat(ctx, p+"exists"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat with canceled context: err = %v, want context.Canceled", err)
	}
	err = s.List(ctx, store.ListOptions{Prefix: p}, func(store.ListEntry) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("List with canceled context: err = %v, want context.Canceled", err)
	}
	if err := s.Delete(ctx, p+"exists"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with canceled context: err = %v, want context.Canceled", err)
	}
}

// testAtomicOverwrite checks that concurrent readers never see a mix or a
// prefix of two versions while a key is overwritten.
func testAtomicOverwrite(t *testing.T, s store.Store, p string) {
	key := p + "k"
	a, b := bytes.Repeat([]byte("a"), 32<<10), bytes.Repeat([]byte("b"), 16<<10)
	put(t, s, key, a)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for i := range 20 {
			v := [][]byte{a, b}[i%2]
			if err := s.Put(t.Context(), key, bytes.NewReader(v), int64(len(v)), store.PutOptions{}); err != nil {
				t.Errorf("overwrite: %v", err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := store.Get(t.Context(), s, key)
				if err != nil {
					t.Errorf("Get during overwrite: %v", err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("Get during overwrite saw %d bytes that are neither version", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
}
