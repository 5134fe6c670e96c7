package s3store

import "github.com/kbackup/kbackup/internal/bufpool"

// StagePartsInUse is how many staged-part buffers are out of the pool.
func StagePartsInUse(s *Store) int { return s.stageParts.Stats().InUse }

// StagePartsStats are the staged-part pool's counts.
func StagePartsStats(s *Store) bufpool.Stats { return s.stageParts.Stats() }
