package manifest

import (
	"context"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
)

// BenchmarkStreamedSegmentWrite streams 256 MB of records per iteration
// into 32 MB segments staged in a local directory store (as the archiver
// does with --compression none and a directory store): append, block
// checksums, the staged file's writes and fsync, publish. It reports the
// process CPU (user + system, from getrusage, so it holds on a shared
// machine) per GB of records: what the archiver spends beyond fetching.
func BenchmarkStreamedSegmentWrite(b *testing.B) {
	for _, codec := range []Codec{CodecNone, CodecZstd} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			recs := benchRecords()
			const total, segBytes = 256 << 20, 32 << 20
			b.SetBytes(total)
			st, err := filestore.New(filepath.Join(b.TempDir(), "store"))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var user, sys time.Duration
			iter := 0
			for b.Loop() {
				iter++
				u0, s0 := rusage(b)
				var off int64
				for seg := 0; int64(seg)*segBytes < total; seg++ {
					w := NewSegmentWriter(off, SegmentOptions{Codec: codec, BlockSize: 1 << 20,
						Stage: func() (store.Staged, error) { return st.Stage(ctx, "segments/") }})
					for int64(w.Size()) < segBytes {
						for i := range recs {
							r := recs[i]
							r.Offset = off
							off++
							if err := w.Append(&r); err != nil {
								b.Fatal(err)
							}
						}
					}
					body, _ := w.FinishBody()
					if !body.Streamed() || body.streamErr != nil {
						b.Fatalf("segment not streamed: %v", body.streamErr)
					}
					if err := body.staged.Publish(ctx, "segments/"+strconv.Itoa(iter)+"-"+strconv.Itoa(seg), store.PutOptions{IfNotExists: true}); err != nil {
						b.Fatal(err)
					}
				}
				u1, s1 := rusage(b)
				for seg := 0; int64(seg)*segBytes < total; seg++ { // the disk holds one iteration's
					if err := st.Delete(ctx, "segments/"+strconv.Itoa(iter)+"-"+strconv.Itoa(seg)); err != nil {
						b.Fatal(err)
					}
				}
				user += u1 - u0
				sys += s1 - s0
			}
			gb := float64(b.N) * float64(total) / 1e9
			b.ReportMetric((user+sys).Seconds()/gb, "cpu-s/GB")
			b.ReportMetric(sys.Seconds()/gb, "sys-s/GB")
		})
	}
}

func rusage(tb testing.TB) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}
