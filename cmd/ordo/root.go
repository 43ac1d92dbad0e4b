package main

import (
	"fmt"
	"os"
	"strings"

	pythonsdk "github.com/ordoflow/ordo/sdk/python"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// buildVersion may be set at build time with -ldflags "-X main.buildVersion=..."
// (a release's tag, say); without it the binary has its Python package's
// version, so that the two always match.
var buildVersion string

// ordoVersion is the binary's version.
func ordoVersion() string {
	if buildVersion != "" {
		return buildVersion
	}
	return pythonsdk.Version
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ordo",
		Short: "Ordo: a workflow orchestrator whose every state change is an event in PostgreSQL",
		Long: `Ordo runs data and ML pipelines: flows of tasks, deployed with schedules to work
queues, executed by workers, every state change recorded in an append-only
event log in PostgreSQL.

Every flag can also be set with an environment variable: ORDO_ and the flag's
name in capitals with - as _ (--database-url is ORDO_DATABASE_URL). A flag on
the command line wins over the environment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnv(cmd)
		},
	}
	root.AddCommand(
		newServerCommand(),
		newWorkerCommand(),
		newDevCommand(),
		newMigrateCommand(),
		newHealthCommand(),
		newDeployCommand(),
		newRunCommand(),
		newRunsCommand(),
		newAutomationsCommand(),
		newEventsCommand(),
		newHistoryCommand(),
		newReplayCommand(),
		newTokensCommand(),
		newPruneCommand(),
		newBenchCommand(),
		newVersionCommand(),
	)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Ordo's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "ordo", ordoVersion())
		},
	}
}

// flagEnvOverrides names the environment variable of flags whose variable
// is not simply ORDO_ and the flag's name.
var flagEnvOverrides = map[string]string{}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	if v, ok := flagEnvOverrides[flag]; ok {
		return v
	}
	return "ORDO_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagsFromEnv sets every flag not given on the command line from its
// ORDO_* environment variable. The database URL also falls back to
// DATABASE_URL.
func flagsFromEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" || f.Annotations[noEnv] != nil {
			return
		}
		name := flagEnv(f)
		v, ok := os.LookupEnv(name)
		if !ok && f.Name == "database-url" {
			v, ok = os.LookupEnv("DATABASE_URL")
		}
		if !ok {
			return
		}
		if f.Value.Type() == "stringSlice" || f.Value.Type() == "stringArray" {
			for _, part := range strings.Split(v, ",") {
				if part = strings.TrimSpace(part); part != "" {
					if e := f.Value.Set(part); e != nil {
						err = fmt.Errorf("%s: %w", name, e)
						return
					}
				}
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}

// envVar names a flag's environment variable where the flag's name would
// clash with another command's flag of another meaning (bench's --json is
// a file, the --json of the listing commands a switch).
const envVar = "ordo_env"

// flagEnv is the environment variable that sets f.
func flagEnv(f *pflag.Flag) string {
	if a := f.Annotations[envVar]; len(a) == 1 {
		return a[0]
	}
	return envName(f.Name)
}

// noEnv marks a flag that only the command line may set: one that destroys
// data must never be switched on by a stray environment variable.
const noEnv = "ordo_no_env"

// flagHelp appends the environment variable to a flag's usage text.
func flagHelp(name, usage string) string {
	return usage + " (env " + envName(name) + ")"
}
