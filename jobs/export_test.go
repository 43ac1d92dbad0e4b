package jobs

// DisableCancelListen makes a worker rely on its periodic check alone to
// find cancelled runs, as when a notification is lost.
func DisableCancelListen(o *WorkerOptions) { o.noCancelListen = true }
