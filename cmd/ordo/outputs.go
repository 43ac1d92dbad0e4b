package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/ordoflow/ordo/client"
	"github.com/ordoflow/ordo/domain"
)

func newRunOutputsCommand(c *apiClient) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "outputs RUN [--download DIR]",
		Short: "List the files a run's tasks left in ORDO_OUTPUT_DIR; with --download, fetch them",
		Long: `List the outputs of a run's task runs: task, name, size, media type and
SHA-256. With --download DIR every output is written to DIR/<task>/<name>
and checked against its SHA-256; a file whose bytes do not match is
removed and the command fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			resp, err := c.api().RunOutputs(ctx, args[0])
			page, err := read(c, resp, err, client.ParseRunOutputsResponse, (*client.RunOutputsResponse).GetJSON200)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dir == "" {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "TASK\tNAME\tSIZE\tMEDIA TYPE\tSHA256")
				for _, o := range page.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", o.TaskName, o.Name, byteSize(o.Size), o.MediaType, o.Sha256)
				}
				return w.Flush()
			}
			for _, o := range page.Items {
				path, err := downloadOutput(ctx, c, dir, o)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "%s\t%s\n", path, byteSize(o.Size))
			}
			if len(page.Items) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "the run has no outputs")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "download", "", "write every output under this directory, as DIR/<task>/<name>")
	return cmd
}

// downloadOutput writes one output to dir/<task>/<name>, through a
// temporary file renamed into place once its digest and size are right.
func downloadOutput(ctx context.Context, c *apiClient, dir string, o client.Output) (string, error) {
	if err := domain.ValidateOutputName(o.Name); err != nil {
		return "", fmt.Errorf("refuse to write output of task %s: %w", o.TaskName, err)
	}
	rel := filepath.Join(o.TaskName, filepath.FromSlash(o.Name))
	if !filepath.IsLocal(rel) || o.TaskName == "" {
		return "", fmt.Errorf("refuse to write output %q of task %q outside %s", o.Name, o.TaskName, dir)
	}
	taskRunID, err := uuid.Parse(o.TaskRunID)
	if err != nil {
		return "", fmt.Errorf("output %q: task run id %q: %w", o.Name, o.TaskRunID, err)
	}
	path := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	// no overall timeout: an output may be large
	resp, err := c.api(&http.Client{}).TaskRunOutput(ctx, taskRunID, o.Name, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		if _, err := check(c, resp, err, client.ParseTaskRunOutputResponse); err != nil {
			return "", err
		}
		return "", fmt.Errorf("%s: %s", what(resp), resp.Status)
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // once renamed, nothing is left to remove
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download output %q of task %s: %w", o.Name, o.TaskName, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.Sha256 || n != o.Size {
		return "", fmt.Errorf("output %q of task %s: got %d bytes hashing to %s, want %d bytes hashing to %s: %w",
			o.Name, o.TaskName, n, got, o.Size, o.Sha256, errDigestMismatch)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

var errDigestMismatch = errors.New("the downloaded bytes do not match the output's digest")

// byteSize prints a size for people.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatMetrics prints metrics as name=value, by name.
func formatMetrics(m map[string]float64) string {
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if s != "" {
			s += " "
		}
		s += k + "=" + strconv.FormatFloat(m[k], 'g', -1, 64)
	}
	return s
}
