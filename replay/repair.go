package replay

import "context"

// Repair appends to live partitions the archived records they lost
// (`kbackup restore --repair --topics ...`): after every replica lost its
// page cache at once, a partition can come back ending before offsets that
// were acknowledged, archived and maybe already consumed. For each selected
// partition whose live log end (high watermark) is below the archive's end
// for the same topic id, the missing records are produced into the same
// partition, where they land at their original offsets (the mechanism of
// RollForward, without a cycle; see the package documentation).
//
// A partition is refused, and nothing is written, when the live topic is
// another incarnation than the archive's current one (topic id), or when
// the live log diverged from the archive: its record before the live end
// (or before the archive's end, when the live log is longer) differs from
// the archived one. A live log that ends at or after the archive's end and
// agrees with it is up to date (the archiver may lag). opts.ToTime and
// opts.ToOffset limit what is appended. opts.DryRun lists the affected
// partitions and ranges. The error is an *Error when some partitions did
// not complete; running Repair again continues from the live end.
func Repair(ctx context.Context, opts Options) (*Summary, error) {
	return run(ctx, opts, "repair", nil)
}
