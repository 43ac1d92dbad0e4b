package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/api"
	"github.com/ordoflow/ordo/domain"
)

// newTokensCommand manages API tokens. It talks to the database directly,
// not to the API: the first token is made before any request can be
// authenticated.
func newTokensCommand() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list and revoke API tokens (talks to the database directly)",
		Long: `API tokens guard the HTTP API and the web UI. While no token exists, the
server is open; from the first one on, every API and UI data request (River
UI and /metrics included) needs one, sent as Authorization: Bearer TOKEN;
only /healthz and /readyz stay open. Events caused with a token record
token:NAME as their actor.

Scopes are nested: read (GET requests), run (read, and start, cancel and
retry runs), admin (everything: deployments, work queues, River UI actions).

Only a SHA-256 of each token is stored: the token is printed once, by
create. Servers cache lookups for up to 5 seconds, so a revoked token may
still be accepted for that long.`,
	}
	cmd.PersistentFlags().StringVar(&url, "database-url", "", flagHelp("database-url", "PostgreSQL connection URL; also read from DATABASE_URL"))

	var scope string
	create := &cobra.Command{
		Use:   "create NAME --scope read|run|admin",
		Short: "Create a token and print it (once: it cannot be shown again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return domain.Invalid("scope", "required: --scope read, run or admin")
			}
			sc, err := api.ParseScope(scope)
			if err != nil {
				return err
			}
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			secret, tok, err := api.TokenCreate(cmd.Context(), pool, args[0], sc)
			if err != nil {
				return err
			}
			// the token alone on stdout, for scripts; the advice on stderr
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "created token %s with scope %s. It is shown only this once: store it now.\n"+
				"Clients send it as Authorization: Bearer TOKEN; the ordo CLI reads it from --api-token or ORDO_API_TOKEN.\n", tok.Name, tok.Scope)
			return nil
		},
	}
	create.Flags().StringVar(&scope, "scope", "", flagHelp("scope", "what the token may do: read, run or admin"))

	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tokens, revoked ones too (never the tokens themselves)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			tokens, err := api.TokenList(cmd.Context(), pool)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if tokens == nil {
					tokens = []api.Token{}
				}
				return enc.Encode(tokens)
			}
			if len(tokens) == 0 {
				fmt.Fprintln(out, "no tokens: the API and UI are open to anyone who can reach them (ordo tokens create NAME --scope admin)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSCOPE\tCREATED\tLAST USED\tREVOKED")
			for _, t := range tokens {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Scope, t.CreatedAt.Local().Format(time.DateTime), orDash(t.LastUsedAt), orDash(t.RevokedAt))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token (servers refuse it within 5 seconds)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, err := openPool(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer pool.Close()
			t, err := api.TokenRevoke(cmd.Context(), pool, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s (scope %s) at %s; servers refuse it within 5 seconds\n", t.Name, t.Scope, t.RevokedAt.Local().Format(time.DateTime))
			return nil
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

func orDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
