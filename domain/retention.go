package domain

import (
	"time"

	"github.com/google/uuid"
)

// StreamRetention is the stream type of retention records: what `ordo
// prune` archived and removed from the log.
const StreamRetention = "retention"

// RetentionStreamID is the one stream of retention records, so that every
// archival ever made can be read back in order.
var RetentionStreamID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("ordo:stream:retention"))

// EventsArchived: the events of finished flow runs (each run's own stream
// and its task runs' streams, sub-flow runs with their parents) were
// written to File, one JSON event per line, and then removed from the log,
// in the transaction that recorded this event. The runs left the read
// models in that transaction too.
type EventsArchived struct {
	FlowRunIDs []uuid.UUID `json:"flow_run_ids"`
	File       string      `json:"file"`   // where the archive was written, as given to prune
	Count      int         `json:"count"`  // events archived and removed
	SHA256     string      `json:"sha256"` // of the archive file's bytes
	Before     time.Time   `json:"before"` // the archived runs ended before this time
}

func (EventsArchived) EventType() string  { return "EventsArchived" }
func (EventsArchived) StreamType() string { return StreamRetention }

// BlobsDeleted: blobs that no event left in the log and no cached result
// named, stored (or stored again) before Before, were deleted from the blob
// store. File lists them, one JSON object (sha256, size, stored_at) per
// line.
type BlobsDeleted struct {
	File   string    `json:"file"`   // where the list was written, as given to prune
	Count  int       `json:"count"`  // blobs deleted
	Bytes  int64     `json:"bytes"`  // their total size
	SHA256 string    `json:"sha256"` // of the list file's bytes
	Before time.Time `json:"before"` // the grace period's start: every blob deleted was stored before it
}

func (BlobsDeleted) EventType() string  { return "BlobsDeleted" }
func (BlobsDeleted) StreamType() string { return StreamRetention }
