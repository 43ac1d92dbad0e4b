package jobs

import "time"

// SetSlotRecheck sets how long a worker's attempts wait for a slot of their
// queue's concurrency limit before looking again by themselves.
func SetSlotRecheck(o *WorkerOptions, d time.Duration) { o.slotRecheck = d }
