package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/internal/pgtest"
)

func execute(t *testing.T, newCmd func() *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCmd()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestTokensCommand: create prints the token once (alone on stdout), ls
// lists without it, revoke stops it, and mistakes exit with the right
// status.
func TestTokensCommand(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	out, errOut, err := execute(t, newTokensCommand, "create", "ci", "--scope", "run", "--database-url", url)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(out)
	if !strings.HasPrefix(secret, "ordo_") || strings.Contains(secret, "\n") || !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("create: stdout %q, stderr %q", out, errOut)
	}

	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	check := func() error {
		r := httptest.NewRequest("POST", "/api/v1/runs/x/cancel", nil)
		r.Header.Set("Authorization", "Bearer "+secret)
		_, err := api.NewAuth(pool, api.AuthOptions{}).Check(r, api.ScopeRun)
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("the printed token is refused: %v", err)
	}

	out, _, err = execute(t, newTokensCommand, "ls", "--database-url", url)
	if err != nil || !strings.Contains(out, "NAME") || !strings.Contains(out, "ci") || !strings.Contains(out, "run") || strings.Contains(out, secret) {
		t.Fatalf("ls: %q %v", out, err)
	}
	out, _, err = execute(t, newTokensCommand, "ls", "--json", "--database-url", url)
	var list []api.Token
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Name != "ci" || list[0].RevokedAt != nil || strings.Contains(out, secret) {
		t.Fatalf("ls --json: %q %v", out, err)
	}

	_, _, err = execute(t, newTokensCommand, "create", "ci", "--scope", "admin", "--database-url", url)
	if domain.ErrorCode(err) != domain.CodeConflict || exitCode(err) != 1 {
		t.Fatalf("duplicate: %v (exit %d)", err, exitCode(err))
	}
	for _, args := range [][]string{{"create", "x"}, {"create", "x", "--scope", "root"}, {"create", "bad name", "--scope", "read"}} {
		_, _, err = execute(t, newTokensCommand, append(args, "--database-url", url)...)
		if exitCode(err) != 2 {
			t.Errorf("%v: %v (exit %d), want exit 2", args, err, exitCode(err))
		}
	}

	if _, _, err := execute(t, newTokensCommand, "create", "other", "--scope", "read", "--database-url", url); err != nil {
		t.Fatal(err)
	}
	out, _, err = execute(t, newTokensCommand, "revoke", "ci", "--database-url", url)
	if err != nil || !strings.Contains(out, "revoked token ci") {
		t.Fatalf("revoke: %q %v", out, err)
	}
	if err := check(); domain.ErrorCode(err) != domain.CodeUnauthorized {
		t.Fatalf("after revoke: %v, want unauthorized", err)
	}
	out, _, _ = execute(t, newTokensCommand, "ls", "--database-url", url)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "ci ") || strings.HasSuffix(lines[1], "-") || !strings.HasSuffix(lines[2], "-") {
		t.Fatalf("ls after revoke must show ci's revocation time and other as active: %q", out)
	}
	if _, _, err := execute(t, newTokensCommand, "revoke", "nobody", "--database-url", url); domain.ErrorCode(err) != domain.CodeNotFound {
		t.Fatalf("revoke unknown: %v", err)
	}
}
