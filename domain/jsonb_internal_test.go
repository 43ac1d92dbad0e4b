package domain

import (
	"testing"

	"github.com/google/uuid"
)

// TestTaskRunIDsReadWithoutDecoder: ids printed as PostgreSQL prints jsonb
// are read by the fast path, not handed to encoding/json (which took 40 to
// 70 ms for a run of 10,000 tasks); other forms are left to it.
func TestTaskRunIDsReadWithoutDecoder(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	printed := `{"a": "` + a.String() + `", "t00001": "` + b.String() + `"}`
	ids, ok := taskRunIDs([]byte(printed))
	if !ok || len(ids) != 2 || ids["a"] != a || ids["t00001"] != b {
		t.Fatalf("jsonb's form %s read as %v (fast path taken: %v)", printed, ids, ok)
	}
	if ids, ok := taskRunIDs([]byte(`{}`)); !ok || ids == nil || len(ids) != 0 {
		t.Errorf("{} read as %v, %v; want an empty map by the fast path", ids, ok)
	}
	for _, other := range []string{
		`{"a":"` + a.String() + `"}`,    // encoding/json's spacing
		`{"q\"": "` + a.String() + `"}`, // an escaped key
		`null`,
	} {
		if _, ok := taskRunIDs([]byte(other)); ok {
			t.Errorf("%s taken by the fast path; encoding/json's rules apply to it", other)
		}
	}
}
