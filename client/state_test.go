package client_test

import (
	"testing"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

// The client says a state is terminal exactly when the server does.
func TestStateTypeTerminalMatchesDomain(t *testing.T) {
	t.Parallel()
	for _, s := range domain.StateTypes {
		if got, want := client.StateType(s).Terminal(), s.Terminal(); got != want {
			t.Errorf("%s: Terminal() = %t, domain says %t", s, got, want)
		}
	}
	if len(domain.StateTypes) < 9 {
		t.Fatalf("only %d state types", len(domain.StateTypes))
	}
}
