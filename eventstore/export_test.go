package eventstore

// For the external tests.
var NoteHistoryName = noteHistoryName

const HistorySQL = historySQL

func SeenHistory() string {
	history.mu.Lock()
	defer history.mu.Unlock()
	return history.seen
}
