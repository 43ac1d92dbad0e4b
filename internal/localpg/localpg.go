// Package localpg starts and stops a private PostgreSQL server in a directory
// of its own, for `ordo dev` and for the tests, so that neither needs a
// database set up by hand. It finds the server binaries already installed on
// the machine (it never downloads anything), creates the cluster with initdb
// when the directory is new, and runs it on 127.0.0.1 with trust
// authentication. When the process runs as root, the server runs as the
// `postgres` user, because PostgreSQL refuses to run as root.
//
// It is plumbing below everything else: it must never import domain,
// eventstore, projections, jobs or api.
package localpg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configure Start.
type Options struct {
	// DataDir is the cluster's data directory. It is created (mode 0700) when
	// missing and initialised with initdb when it holds no PG_VERSION file.
	// Required. When running as root, the directory is given to the postgres
	// user and every parent directory must be traversable by that user.
	DataDir string

	// Port is the TCP port the server listens on at 127.0.0.1. Zero means
	// pick a free port. Ignored when DataDir already holds a running server:
	// that server's port is used.
	Port int

	// Fast turns off fsync, synchronous_commit and full_page_writes. A crash
	// of the machine can then corrupt the cluster: for tests only.
	Fast bool

	// Log receives the output of initdb and pg_ctl. The server's own log is
	// written to postgres.log in DataDir. Defaults to discarding the output.
	Log io.Writer
}

func (o *Options) validate() error {
	if o.DataDir == "" {
		return errors.New("localpg: Options.DataDir is required")
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("localpg: Options.Port %d is out of range 0-65535", o.Port)
	}
	return nil
}

// Server is a PostgreSQL server started (or found running) by Start.
type Server struct {
	dataDir string
	port    int
	bin     string // directory holding initdb, pg_ctl and postgres
	runAs   string // user to run the binaries as; empty means the current user
	log     io.Writer
	reused  bool
}

// serverLogName is the server's log file, inside the data directory.
const serverLogName = "postgres.log"

// pgUser is the superuser created by initdb and, when running as root, the
// operating-system user the server runs as.
const pgUser = "postgres"

// Start starts a PostgreSQL server on opts.DataDir, creating the cluster
// first if needed, and returns once a connection to it succeeds. When the
// data directory already holds a running server, Start returns that server
// (see Server.Reused).
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("localpg: data dir: %w", err)
	}
	s := &Server{dataDir: dataDir, log: opts.Log}
	if s.log == nil {
		s.log = io.Discard
	}

	if port, ok := runningPort(dataDir); ok {
		s.port, s.reused = port, true
		if err := s.waitReady(ctx); err != nil {
			return nil, fmt.Errorf("localpg: server already running in %s: %w", dataDir, err)
		}
		return s, nil
	}

	wantMajor := ""
	if b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		wantMajor = strings.TrimSpace(string(b))
	}
	if s.bin, err = findBinaries(ctx, wantMajor); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		s.runAs = pgUser
	}
	if err := s.prepareDataDir(); err != nil {
		return nil, err
	}
	if wantMajor == "" {
		if err := s.initdb(ctx, opts.Fast); err != nil {
			return nil, err
		}
	}

	const attempts = 5 // a picked free port can be taken before the server binds it
	for attempt := 1; ; attempt++ {
		s.port = opts.Port
		if s.port == 0 {
			if s.port, err = freePort(); err != nil {
				return nil, fmt.Errorf("localpg: pick a free port: %w", err)
			}
		}
		if opts.Port != 0 && !portFree(opts.Port) {
			return nil, fmt.Errorf("localpg: 127.0.0.1:%d: %w", opts.Port, ErrPortInUse)
		}
		err = s.start(ctx, opts.Fast)
		if err == nil {
			break
		}
		if opts.Port != 0 || attempt == attempts || !errors.Is(err, ErrPortInUse) {
			return nil, err
		}
	}
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("localpg: server started but does not accept connections: %w", err)
	}
	return s, nil
}

// URL returns the connection URL of the server's postgres database, as the
// postgres superuser.
func (s *Server) URL() string { return URLFor(s.port) }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// DataDir returns the absolute path of the server's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// Reused reports whether Start found the server already running instead of
// starting it. A caller that did not start the server may prefer to leave it
// running rather than call Stop.
func (s *Server) Reused() bool { return s.reused }

// Stop stops the server with pg_ctl's fast mode (open transactions are rolled
// back) and waits until it has exited. Stopping a server that is not running
// is not an error.
func (s *Server) Stop(ctx context.Context) error {
	if _, ok := runningPort(s.dataDir); !ok {
		return nil
	}
	if s.bin == "" {
		// A reused server: find binaries of the same major version.
		major := ""
		if b, err := os.ReadFile(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
			major = strings.TrimSpace(string(b))
		}
		bin, err := findBinaries(ctx, major)
		if err != nil {
			return err
		}
		s.bin = bin
		if os.Geteuid() == 0 {
			s.runAs = pgUser
		}
	}
	if _, err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", "60"); err != nil {
		return fmt.Errorf("localpg: stop: %w", err)
	}
	return nil
}

// StopIn stops the server running in dataDir, if any, as Stop does: for a
// caller that holds no Server, such as one cleaning up after a process that
// was killed before it could stop its own.
func StopIn(ctx context.Context, dataDir string) error {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("localpg: data dir: %w", err)
	}
	return (&Server{dataDir: dir, log: io.Discard}).Stop(ctx)
}

// initdb creates a new cluster in the (empty) data directory.
func (s *Server) initdb(ctx context.Context, fast bool) error {
	args := []string{"-D", s.dataDir, "-U", pgUser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if fast {
		args = append(args, "--no-sync")
	}
	if _, err := s.run(ctx, "initdb", args...); err != nil {
		return fmt.Errorf("localpg: initdb: %w", err)
	}
	return nil
}

// ErrPortInUse is returned by Start when Options.Port is taken.
var ErrPortInUse = errors.New("port already in use")

// Running returns the port of the server running in dataDir, read from its
// postmaster.pid, when the process that file names is alive.
func Running(dataDir string) (int, bool) { return runningPort(dataDir) }

// URLFor returns the connection URL of a server started by Start that
// listens on port.
func URLFor(port int) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", pgUser, port)
}

// start runs pg_ctl start on s.port and waits for the server to be ready.
func (s *Server) start(ctx context.Context, fast bool) error {
	logPath := filepath.Join(s.dataDir, serverLogName)
	logOffset := int64(0)
	if fi, err := os.Stat(logPath); err == nil {
		logOffset = fi.Size()
	}

	// The socket lives in the data directory so that servers never collide
	// on /tmp/.s.PGSQL.5432. Unix socket paths are limited to about 107
	// bytes; beyond that the server listens on TCP only.
	socketDir := s.dataDir
	if len(socketDir)+len("/.s.PGSQL.65535.lock") > 100 {
		socketDir = ""
	}
	settings := []string{
		"listen_addresses=127.0.0.1",
		"port=" + strconv.Itoa(s.port),
		"unix_socket_directories=" + socketDir,
		"max_connections=200",
		"shared_buffers=256MB",
	}
	if fast {
		settings = append(settings, "fsync=off", "synchronous_commit=off", "full_page_writes=off")
	}
	// pg_ctl hands -o to /bin/sh, so every value is single-quoted.
	var o strings.Builder
	for i, kv := range settings {
		if i > 0 {
			o.WriteByte(' ')
		}
		o.WriteString("-c " + shellQuote(kv))
	}
	_, err := s.run(ctx, "pg_ctl", "start", "-D", s.dataDir, "-l", logPath, "-w", "-t", "60", "-o", o.String())
	if err == nil {
		return nil
	}
	tail := logTail(logPath, logOffset, 20)
	if strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use") {
		return fmt.Errorf("localpg: start on port %d: %w\n%s", s.port, ErrPortInUse, tail)
	}
	return fmt.Errorf("localpg: start: %w\nserver log (%s):\n%s", err, logPath, tail)
}

// waitReady returns once a connection to the server succeeds, or fails after
// 60 seconds.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, s.URL())
		if err == nil {
			err = conn.Ping(attemptCtx)
			_ = conn.Close(context.WithoutCancel(attemptCtx))
		}
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect to %s: %w", s.URL(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// run runs one of the PostgreSQL binaries, as s.runAs when set. Its output
// goes to s.log and, on failure, into the returned error.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, name)
	var cmd *exec.Cmd
	if s.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	// The postgres user may not be able to enter the current directory, and
	// the server must not receive the terminal's Ctrl-C meant for us.
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, s.log)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// prepareDataDir creates the data directory when missing and, when the
// binaries run as another user, gives it to that user and checks that the
// user can reach it.
func (s *Server) prepareDataDir() error {
	parent := filepath.Dir(s.dataDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("localpg: create parent of data dir: %w", err)
	}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("localpg: create data dir: %w", err)
	}
	// initdb and the server both demand that only the owner can enter it.
	if err := os.Chmod(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("localpg: data dir: %w", err)
	}
	if s.runAs == "" {
		return nil
	}

	if _, err := exec.LookPath("runuser"); err != nil {
		return errors.New("localpg: running as root, PostgreSQL must run as another user, and runuser (util-linux) is not installed")
	}
	u, err := user.Lookup(s.runAs)
	if err != nil {
		return fmt.Errorf("localpg: running as root, PostgreSQL refuses to run as root, and user %q cannot be found (%v): create it (useradd --system %s) or run as a normal user", s.runAs, err, s.runAs)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	gids := []int{gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if n, err := strconv.Atoi(id); err == nil {
				gids = append(gids, n)
			}
		}
	}

	for dir := parent; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		if !searchable(fi, uid, gids) {
			return fmt.Errorf("localpg: user %s cannot reach data dir %s: parent %s (mode %v) is not traversable by it; "+
				"put the data dir elsewhere or run chmod o+x %s", s.runAs, s.dataDir, dir, fi.Mode().Perm(), dir)
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}

	fi, err := os.Stat(s.dataDir)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
		return nil
	}
	err = filepath.WalkDir(s.dataDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("localpg: give data dir to %s: %w", s.runAs, err)
	}
	return nil
}

// searchable reports whether the user uid, member of gids, may traverse the
// directory described by fi. ACLs are not considered.
func searchable(fi fs.FileInfo, uid int, gids []int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid:
		return mode&0o100 != 0
	case slices.Contains(gids, int(st.Gid)):
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// runningPort reads postmaster.pid in dataDir and returns the server's port
// when the process it names is alive.
func runningPort(dataDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil || port <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return port, true
}

// Binaries returns the directory of the PostgreSQL server binaries Start
// would use (of major version wantMajor when set), for harnesses that run
// the server their own way.
func Binaries(ctx context.Context, wantMajor string) (string, error) {
	return findBinaries(ctx, wantMajor)
}

// findBinaries returns the first directory holding initdb, pg_ctl and
// postgres: the one on PATH, then /usr/lib/postgresql/*/bin newest version
// first, then Homebrew's postgresql@* kegs, then /usr/local/pgsql/bin. When
// wantMajor is set (an existing cluster), the binaries must be of that major
// version.
func findBinaries(ctx context.Context, wantMajor string) (string, error) {
	var candidates []string
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",
		"/opt/homebrew/opt/postgresql@*/bin",
		"/usr/local/opt/postgresql@*/bin",
	} {
		matches, _ := filepath.Glob(pattern)
		slices.SortFunc(matches, func(a, b string) int { return versionOf(b) - versionOf(a) })
		candidates = append(candidates, matches...)
	}
	candidates = append(candidates, "/usr/local/pgsql/bin")

	var wrongVersion []string
	for _, dir := range candidates {
		if !hasBinaries(dir) {
			continue
		}
		if wantMajor == "" {
			return dir, nil
		}
		out, err := exec.CommandContext(ctx, filepath.Join(dir, "postgres"), "--version").Output()
		if err != nil {
			continue
		}
		// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
		if f := strings.Fields(string(out)); len(f) >= 3 && strings.Split(f[2], ".")[0] == wantMajor {
			return dir, nil
		}
		wrongVersion = append(wrongVersion, fmt.Sprintf("%s (%s)", dir, strings.TrimSpace(string(out))))
	}
	if len(wrongVersion) > 0 {
		return "", fmt.Errorf("localpg: the data dir was created by PostgreSQL %s, but only other versions are installed: %s; "+
			"install PostgreSQL %s or remove the data dir", wantMajor, strings.Join(wrongVersion, ", "), wantMajor)
	}
	return "", errors.New("localpg: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, " +
		"in /usr/lib/postgresql/*/bin or in /usr/local/pgsql/bin; install them " +
		"(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) " +
		"or point Ordo at an existing database with ORDO_DATABASE_URL")
}

// versionOf returns the major version in a path like
// /usr/lib/postgresql/15/bin or /opt/homebrew/opt/postgresql@15/bin, or 0.
func versionOf(dir string) int {
	parent := filepath.Base(filepath.Dir(dir))
	if _, after, ok := strings.Cut(parent, "@"); ok {
		parent = after
	}
	v, _ := strconv.Atoi(strings.Split(parent, ".")[0])
	return v
}

func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether 127.0.0.1:port can be listened on now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// logTail returns the last n lines of the file at path written after offset.
func logTail(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
