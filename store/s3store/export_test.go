package s3store

// StagePartsInUse is how many staged-part buffers are out of the pool.
func StagePartsInUse(s *Store) int { return s.stageParts.Stats().InUse }
