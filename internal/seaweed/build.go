package seaweed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Build builds weed into the cache unless it is there, and returns its
// path. SeaweedFS's module has a replace directive, so `go install`
// refuses it: Build downloads the module from the proxy, copies it where
// it can be written and runs `go build ./weed` in it. Several processes
// may call it at once: one builds, the others wait for it. It takes
// minutes and a few hundred MB of the Go build cache; log receives go's
// output.
func Build(ctx context.Context, log io.Writer) (string, error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	dir := filepath.Dir(bin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("seaweed: lock %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built by another process meanwhile
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	defer os.RemoveAll(work)

	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("seaweed: building weed needs the go command: %w", err)
	}
	run := func(dir string, stdout io.Writer, args ...string) error {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = dir
		// -mod=mod: the module's go.sum may lack what its go.mod needs.
		cmd.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"), "GO111MODULE=on", "GOWORK=off")
		cmd.Stdout, cmd.Stderr = stdout, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("seaweed: go %v: %w", args, err)
		}
		return nil
	}
	fmt.Fprintf(log, "seaweed: downloading %s@%s\n", Module, Version)
	out, err := os.Create(filepath.Join(work, "download.json"))
	if err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	err = run(work, out, "mod", "download", "-json", Module+"@"+Version)
	out.Close()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(b, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("seaweed: go mod download %s@%s: %s %v", Module, Version, mod.Error, err)
	}
	src := filepath.Join(work, "src")
	if err := copyTree(mod.Dir, src); err != nil {
		return "", fmt.Errorf("seaweed: copy the module: %w", err)
	}
	fmt.Fprintf(log, "seaweed: building weed into %s (a few minutes)\n", bin)
	// -trimpath: the build cache serves a later build from another
	// temporary directory.
	if err := run(src, log, "build", "-trimpath", "-o", bin+".tmp", "./weed"); err != nil {
		return "", err
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		return "", fmt.Errorf("seaweed: %w", err)
	}
	return bin, nil
}

// copyTree copies the regular files under from to to, writable (the
// module cache is read-only).
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
