// Package seaweed runs a real S3-compatible service, SeaweedFS's `weed
// server -s3`, on loopback ports in a directory of its own, for the tests
// and benchmarks of the s3 blob store. The weed binary is built once from
// SeaweedFS's module on the Go module proxy into a cache outside the
// repository (Build, `scripts/install-deps s3`); Start only runs it.
//
// It is test plumbing below everything else: it must never import domain,
// eventstore, projections, jobs or api.
package seaweed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Module and Version are the SeaweedFS release Ordo tests against.
const (
	Module  = "github.com/seaweedfs/seaweedfs"
	Version = "v0.0.0-20261109003541-7506e5f91cd6"
)

// ErrMissing is returned when the weed binary is not in the cache.
var ErrMissing = errors.New("SeaweedFS's weed binary is not built: run scripts/install-deps s3")

// Binary is where weed is (or will be) cached:
// ${XDG_CACHE_HOME:-$HOME/.cache}/ordo/seaweedfs/<Version>/weed.
func Binary() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("seaweed: cache directory: %w", err)
	}
	return filepath.Join(dir, "ordo", "seaweedfs", Version, "weed"), nil
}

// Find returns the cached weed binary, or an error wrapping ErrMissing.
func Find() (string, error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w (looked for %s)", ErrMissing, bin)
	}
	return bin, nil
}

// Options configure Start.
type Options struct {
	// Dir holds the server's data and configuration. Required; it is not
	// removed by Stop.
	Dir string
	// Log receives weed's output. Defaults to Dir/weed.log.
	Log io.Writer
}

// Server is a running weed server with its S3 gateway.
type Server struct {
	// Endpoint is the S3 gateway's URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKey and SecretKey are the one identity the gateway knows,
	// allowed everything.
	AccessKey, SecretKey string

	cmd     *exec.Cmd
	sockets []string // weed's own unix sockets, always in /tmp
	done    chan struct{}
	err     error // of cmd.Wait, once done is closed
	logf    *os.File
}

// Start runs weed from the cache on free loopback ports and returns once
// its S3 gateway stores an object.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("seaweed: Options.Dir is required")
	}
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	const attempts = 3 // a free port can be taken before weed binds it
	for attempt := 1; ; attempt++ {
		s, err := start(ctx, bin, opts)
		if err == nil || attempt == attempts || !errors.Is(err, errPortTaken) {
			return s, err
		}
	}
}

var errPortTaken = errors.New("a port was taken")

func start(ctx context.Context, bin string, opts Options) (*Server, error) {
	if err := os.MkdirAll(filepath.Join(opts.Dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("seaweed: %w", err)
	}
	s := &Server{AccessKey: "ordo-" + randomHex(6), SecretKey: randomHex(20), done: make(chan struct{})}
	identities := map[string]any{"identities": []any{map[string]any{
		"name":        "ordo",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}}
	config := filepath.Join(opts.Dir, "s3.json")
	b, _ := json.Marshal(identities)
	if err := os.WriteFile(config, b, 0o600); err != nil {
		return nil, fmt.Errorf("seaweed: %w", err)
	}
	ports, err := freePorts(8)
	if err != nil {
		return nil, fmt.Errorf("seaweed: pick free ports: %w", err)
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = "http://127.0.0.1:" + p(6)
	for i, name := range map[int]string{1: "master", 3: "volume", 5: "filer", 7: "s3"} {
		s.sockets = append(s.sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, ports[i]))
	}
	args := []string{"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + filepath.Join(opts.Dir, "data"),
		"-master.port=" + p(0), "-master.port.grpc=" + p(1), "-master.telemetry=false",
		"-master.volumeSizeLimitMB=1024", "-volume.max=100",
		"-volume.port=" + p(2), "-volume.port.grpc=" + p(3), "-volume.preStopSeconds=0",
		"-filer.port=" + p(4), "-filer.port.grpc=" + p(5), "-filer.localSocket=" + filepath.Join(opts.Dir, "filer.sock"),
		"-s3", "-s3.port=" + p(6), "-s3.port.grpc=" + p(7), "-s3.config=" + config,
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.localSocket=" + filepath.Join(opts.Dir, "s3.sock"),
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = opts.Dir
	// Not the caller's environment: weed would make AWS_ACCESS_KEY_ID an
	// admin and read configuration from $HOME.
	cmd.Env = []string{"HOME=" + opts.Dir, "PATH=/usr/bin:/bin", "TMPDIR=" + opts.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(opts.Dir, "weed.log")
	if opts.Log != nil {
		cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	} else {
		if s.logf, err = os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("seaweed: %w", err)
		}
		cmd.Stdout, cmd.Stderr = s.logf, s.logf
	}
	if err := cmd.Start(); err != nil {
		s.closeLog()
		return nil, fmt.Errorf("seaweed: start %s: %w", bin, err)
	}
	s.cmd = cmd
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		if opts.Log == nil {
			log, _ := os.ReadFile(logPath)
			if bytes.Contains(log, []byte("address already in use")) {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			err = fmt.Errorf("%w\n%s", err, tail(log, 20))
		}
		return nil, err
	}
	return s, nil
}

// waitReady waits until the gateway creates a bucket and stores an object
// in it: the first write also waits for the master to grow volumes.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	client, err := s.Client()
	if err != nil {
		return err
	}
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("seaweed: weed exited before its S3 gateway answered: %v", s.err)
		case <-ctx.Done():
			return fmt.Errorf("seaweed: the S3 gateway at %s did not answer: %w (last: %v)", s.Endpoint, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
		if last = s.CreateBucket(ctx, "ordo-ready"); last != nil {
			continue
		}
		_, last = client.PutObject(ctx, "ordo-ready", "probe", strings.NewReader("ok"), 2, minio.PutObjectOptions{})
		if last == nil {
			return nil
		}
	}
}

// Client returns an S3 client of the gateway, signed in.
func (s *Server) Client() (*minio.Client, error) {
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1",
	})
	if err != nil {
		return nil, fmt.Errorf("seaweed: %w", err)
	}
	return c, nil
}

// CreateBucket creates a bucket; one that exists already is fine.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	err = c.MakeBucket(ctx, name, minio.MakeBucketOptions{})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		return nil
	}
	return err
}

// Pid is weed's process id, which is also its process group's.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop kills weed and anything it started (its process group). Nothing it
// holds is worth a graceful shutdown, which takes weed seconds of retries.
func (s *Server) Stop() error {
	defer s.closeLog()
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	for _, sock := range s.sockets {
		_ = os.Remove(sock)
	}
	return nil
}

func (s *Server) closeLog() {
	if s.logf != nil {
		s.logf.Close()
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var (
		ports []int
		ls    []net.Listener
	)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
