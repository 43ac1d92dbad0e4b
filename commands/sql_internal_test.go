package commands

import (
	"testing"

	"github.com/ordoflow/ordo/internal/pgtest"
)

// TestStatementsBuiltFromFragmentsParse: the statements put together from
// riverjob's and eventstore's SQL fragments are valid SQL on the schema.
func TestStatementsBuiltFromFragmentsParse(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t)
	for name, sql := range map[string]string{
		"applySQL": applySQL, "applySlotsSQL": applySlotsSQL, "grantSlotsSQL": grantSlotsSQL,
		"sweepSlotsSQL": sweepSlotsSQL, "slotsSQL": slotsSQL, "dueRunsSQL": dueRunsSQL, "lateChecksSQL": lateChecksSQL,
	} {
		if _, err := pool.Exec(t.Context(), "PREPARE check_"+name+" AS "+sql); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
