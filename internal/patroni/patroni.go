// Package patroni runs a highly available PostgreSQL for tests: one etcd and
// two PostgreSQL nodes managed by Patroni, on loopback ports in a directory
// of their own, so that a test can fail the primary over (SIGKILL of its
// postmaster, a planned switchover) and watch Ordo follow it. It uses the
// patroni and etcd binaries installed on the machine (`scripts/install-deps
// ha`) and the PostgreSQL server binaries localpg finds; as root, every
// process runs as the postgres user, since PostgreSQL refuses root.
//
// It is test plumbing below everything else: like localpg it must never
// import domain, eventstore, projections, jobs or api.
package patroni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/internal/localpg"
)

// scope is the Patroni cluster's name, its key prefix in etcd.
const scope = "ordo"

// pgUser is the superuser of the nodes and, as root, the operating-system
// user every process runs as.
const pgUser = "postgres"

// Options configure Start.
type Options struct {
	// Dir holds the etcd and node directories, the configuration files and
	// the logs. Required; it must be empty or missing.
	Dir string
	// Asynchronous turns synchronous_mode off. Defaults to synchronous
	// replication: a commit returns once the standby has it.
	Asynchronous bool
}

// Missing says what is not installed for Start to work, or "" when
// everything is: patroni, patronictl, etcd and PostgreSQL's server.
func Missing() string {
	var missing []string
	for _, bin := range []string{"patroni", "patronictl", "etcd"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := localpg.Binaries(context.Background(), ""); err != nil {
		missing = append(missing, "the PostgreSQL server")
	}
	if len(missing) == 0 {
		return ""
	}
	return strings.Join(missing, ", ") + " not installed (scripts/install-deps ha installs them)"
}

// Node is one PostgreSQL node and the Patroni that manages it.
type Node struct {
	Name    string
	Port    int // PostgreSQL's
	API     int // Patroni's REST API
	dataDir string
	config  string
	patroni *exec.Cmd
	exited  chan struct{}
}

// URL is the node's own address, for database db.
func (n *Node) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgUser, n.Port, db)
}

// Cluster is a running etcd and its Patroni nodes.
type Cluster struct {
	Nodes []*Node
	dir   string
	runAs string
	etcd  *exec.Cmd
	done  chan struct{} // closed when etcd exited
	stop  sync.Once
	logs  []*os.File
	// stalled are the WAL senders StallReplication stopped.
	stalled []int
}

// Start starts etcd and two Patroni nodes and returns once one node leads
// and the other streams from it (as the synchronous standby unless
// Asynchronous). Stop stops everything; Start stops what it started when
// it fails.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if m := Missing(); m != "" {
		return nil, errors.New("patroni: " + m)
	}
	if opts.Dir == "" {
		return nil, errors.New("patroni: Options.Dir is required")
	}
	bin, err := localpg.Binaries(ctx, "")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: opts.Dir, done: make(chan struct{})}
	if os.Geteuid() == 0 {
		c.runAs = pgUser
	}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	ports, err := freePorts(2 + 2*2)
	if err != nil {
		return nil, err
	}
	etcdClient := fmt.Sprintf("127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if c.etcd, err = c.spawn("etcd", "etcd", "--name", "etcd", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", "http://"+etcdClient, "--advertise-client-urls", "http://"+etcdClient,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "etcd="+peer,
		"--unsafe-no-fsync"); err != nil {
		return nil, err
	}
	go func() { _ = c.etcd.Wait(); close(c.done) }()

	for i := range 2 {
		n := &Node{Name: fmt.Sprintf("pg%d", i), Port: ports[2+2*i], API: ports[3+2*i]}
		n.dataDir = filepath.Join(c.dir, n.Name)
		n.config = filepath.Join(c.dir, n.Name+".yml")
		if err := c.writeConfig(n, etcdClient, bin, !opts.Asynchronous); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	// The first node bootstraps alone, so that the second one finds it and
	// becomes its standby rather than racing for the initialisation.
	for i, n := range c.Nodes {
		if err := c.startPatroni(n); err != nil {
			return nil, err
		}
		if i == 0 {
			if _, err := c.waitLeader(ctx, 2*time.Minute); err != nil {
				return nil, err
			}
		}
	}
	if err := c.WaitReplicating(ctx, !opts.Asynchronous); err != nil {
		return nil, err
	}
	return c, nil
}

// URL is the multi-host connection URL of database db that reaches
// whichever node is the primary.
func (c *Cluster) URL(db string) string {
	hosts := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", n.Port)
	}
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&target_session_attrs=read-write", pgUser, strings.Join(hosts, ","), db)
}

// Dir is the directory of the cluster's files and logs (etcd.log,
// pg0.log: Patroni's, pg0/postgres.log...).
func (c *Cluster) Dir() string { return c.dir }

// member is a node as Patroni's REST API /cluster describes it.
type member struct {
	Name     string `json:"name"`
	Role     string `json:"role"` // leader, sync_standby, replica
	State    string `json:"state"`
	Timeline int    `json:"timeline"`
}

// members asks any node's Patroni for the cluster's members.
func (c *Cluster) members(ctx context.Context) ([]member, error) {
	var last error
	for _, n := range c.Nodes {
		var out struct {
			Members []member `json:"members"`
		}
		if last = getJSON(ctx, fmt.Sprintf("http://127.0.0.1:%d/cluster", n.API), &out); last == nil {
			return out.Members, nil
		}
	}
	return nil, last
}

// Leader returns the node that leads now (by Patroni), or an error when
// none does.
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	ms, err := c.members(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Role == "leader" && m.State == "running" {
			return c.node(m.Name), nil
		}
	}
	return nil, errors.New("patroni: no leader")
}

func (c *Cluster) node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// waitLeader waits until a node leads and accepts writes.
func (c *Cluster) waitLeader(ctx context.Context, timeout time.Duration) (*Node, error) {
	var n *Node
	err := c.poll(ctx, timeout, "a leader that accepts writes", func(ctx context.Context) (bool, error) {
		var err error
		if n, err = c.Leader(ctx); err != nil {
			return false, nil
		}
		return isPrimary(ctx, n), nil
	})
	return n, err
}

// WaitReplicating waits until a node leads, accepts writes, and the other
// one streams from it (as its synchronous standby when sync).
func (c *Cluster) WaitReplicating(ctx context.Context, sync bool) error {
	return c.poll(ctx, 3*time.Minute, "a leader with a streaming standby", func(ctx context.Context) (bool, error) {
		leader, err := c.waitLeader(ctx, time.Minute)
		if err != nil {
			return false, err
		}
		conn, err := pgx.Connect(ctx, leader.URL("postgres"))
		if err != nil {
			return false, nil
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var streaming int
		q := `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`
		if sync {
			q += ` AND sync_state = 'sync'`
		}
		if err := conn.QueryRow(ctx, q).Scan(&streaming); err != nil || streaming != len(c.Nodes)-1 {
			return false, nil
		}
		if !sync {
			return true, nil
		}
		// Patroni fails over only to the standby it recorded as synchronous
		// in etcd, which it does after PostgreSQL has it.
		ms, err := c.members(ctx)
		if err != nil {
			return false, nil
		}
		for _, m := range ms {
			if m.Role == "sync_standby" {
				return true, nil
			}
		}
		return false, nil
	})
}

// isPrimary reports whether n accepts connections and is not in recovery.
func isPrimary(ctx context.Context, n *Node) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, n.URL("postgres"))
	if err != nil {
		return false
	}
	defer conn.Close(context.WithoutCancel(cctx))
	var recovering bool
	return conn.QueryRow(cctx, `SELECT pg_is_in_recovery()`).Scan(&recovering) == nil && !recovering
}

// WaitPrimary waits until n accepts writes, polling every 20 ms, and
// returns when it saw that first.
func (c *Cluster) WaitPrimary(ctx context.Context, n *Node, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := c.poll(ctx, timeout, n.Name+" accepts writes", func(ctx context.Context) (bool, error) {
		at = time.Now()
		return isPrimary(ctx, n), nil
	})
	return at, err
}

// KillPrimary SIGKILLs the postmaster of the leader (its backends then end
// by themselves), and returns that node and when it was killed. Patroni
// promotes the other node at once (primary_start_timeout is 0).
func (c *Cluster) KillPrimary(ctx context.Context) (*Node, time.Time, error) {
	return c.killLeader(ctx, false)
}

// killLeader SIGKILLs the leader's postmaster, after its Patroni when
// withPatroni, and the WAL senders StallReplication stopped.
func (c *Cluster) killLeader(ctx context.Context, withPatroni bool) (*Node, time.Time, error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	pid, err := postmasterPID(leader.dataDir)
	if err != nil {
		return nil, time.Time{}, err
	}
	at := time.Now()
	if withPatroni {
		_ = syscall.Kill(-leader.patroni.Process.Pid, syscall.SIGKILL)
		<-leader.exited
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil, time.Time{}, fmt.Errorf("patroni: SIGKILL the postmaster of %s: %w", leader.Name, err)
	}
	c.killStalled()
	if withPatroni { // nothing restarts it: wait until it is gone
		if err := waitGone(pid, time.Minute); err != nil {
			return nil, time.Time{}, err
		}
	}
	return leader, at, nil
}

// LosePrimary SIGKILLs the leader's Patroni and then its postmaster, as
// when the primary's machine is lost, and returns that node and when it
// was lost. Patroni promotes the other node once the leader's key expires
// (ttl), even when the lost node had commits the other never received:
// with the node's Patroni alive, Patroni would rather restart the old
// primary, the most advanced node, than lose them. StartNode brings it
// back.
func (c *Cluster) LosePrimary(ctx context.Context) (*Node, time.Time, error) {
	return c.killLeader(ctx, true)
}

// StartNode starts the Patroni of a node LosePrimary lost: it rejoins the
// cluster as a standby of the new leader, rewinding (or, failing that,
// cloning again) the commits of its own that the new leader never had.
func (c *Cluster) StartNode(n *Node) error {
	select {
	case <-n.exited:
	default:
		return fmt.Errorf("patroni: %s runs", n.Name)
	}
	return c.startPatroni(n)
}

// startPatroni spawns n's Patroni.
func (c *Cluster) startPatroni(n *Node) error {
	cmd, err := c.spawn(n.Name, "patroni", n.config)
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.patroni, n.exited = cmd, exited
	return nil
}

// StallReplication stops (SIGSTOP) the leader's WAL senders, so that what
// the primary commits from now on reaches no standby: with asynchronous
// replication a failover then loses it. KillPrimary kills them with the
// postmaster.
func (c *Cluster) StallReplication(ctx context.Context) error {
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, leader.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_replication`)
	if err != nil {
		return err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return errors.New("patroni: the leader has no WAL sender")
	}
	for _, pid := range pids {
		if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
			return fmt.Errorf("patroni: SIGSTOP the WAL sender %d: %w", pid, err)
		}
		c.stalled = append(c.stalled, int(pid))
	}
	return nil
}

// Switchover asks Patroni (patronictl) to hand the leadership from the
// current leader to the other node, and returns the new leader once it
// accepts writes.
func (c *Cluster) Switchover(ctx context.Context) (*Node, error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	var candidate *Node
	for _, n := range c.Nodes {
		if n != leader {
			candidate = n
		}
	}
	if out, err := c.patronictl(ctx, "switchover", "--leader", leader.Name, "--candidate", candidate.Name, "--force"); err != nil {
		return nil, fmt.Errorf("patroni: switchover: %w\n%s", err, out)
	}
	if _, err := c.WaitPrimary(ctx, candidate, 2*time.Minute); err != nil {
		return nil, err
	}
	return candidate, nil
}

// SetSynchronous turns synchronous_mode on or off (patronictl edit-config)
// and waits until replication matches.
func (c *Cluster) SetSynchronous(ctx context.Context, on bool) error {
	if out, err := c.patronictl(ctx, "edit-config", "--set", "synchronous_mode="+strconv.FormatBool(on), "--force"); err != nil {
		return fmt.Errorf("patroni: edit-config: %w\n%s", err, out)
	}
	return c.poll(ctx, 2*time.Minute, fmt.Sprintf("synchronous_standby_names set (%t)", on), func(ctx context.Context) (bool, error) {
		leader, err := c.Leader(ctx)
		if err != nil {
			return false, nil
		}
		conn, err := pgx.Connect(ctx, leader.URL("postgres"))
		if err != nil {
			return false, nil
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var names string
		if err := conn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&names); err != nil {
			return false, nil
		}
		return (names != "") == on, nil
	})
}

// History is Patroni's record of the leader changes: for each timeline
// switch, when it happened and which node was promoted.
func (c *Cluster) History(ctx context.Context) ([]Promotion, error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	var rows [][]any
	if err := getJSON(ctx, fmt.Sprintf("http://127.0.0.1:%d/history", leader.API), &rows); err != nil {
		return nil, err
	}
	var out []Promotion
	for _, r := range rows {
		if len(r) < 5 {
			continue
		}
		ts, _ := r[3].(string)
		at, err := time.Parse("2006-01-02T15:04:05.999999-07:00", ts)
		if err != nil {
			return nil, fmt.Errorf("patroni: history time %q: %w", ts, err)
		}
		name, _ := r[4].(string)
		out = append(out, Promotion{At: at, Node: name})
	}
	return out, nil
}

// Promotion is one leader change in Patroni's history.
type Promotion struct {
	At   time.Time
	Node string
}

// Stop stops the Patroni nodes (each stops its PostgreSQL) and etcd, kills
// what does not stop within a minute, and waits until nothing it started
// runs. It keeps the directory.
func (c *Cluster) Stop() error {
	var errs []error
	c.stop.Do(func() {
		c.killStalled()
		for _, n := range c.Nodes {
			if n.patroni == nil {
				continue
			}
			errs = append(errs, stopProcess(n.patroni, n.exited, time.Minute))
			// Patroni leaves PostgreSQL running when it is killed: stop it
			// (SIGQUIT: immediate shutdown, which ends the backends too).
			if pid, err := postmasterPID(n.dataDir); err == nil {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				errs = append(errs, waitGone(pid, time.Minute))
			}
		}
		if c.etcd != nil && c.etcd.Process != nil {
			errs = append(errs, stopProcess(c.etcd, c.done, time.Minute))
		}
		for _, f := range c.logs {
			f.Close()
		}
	})
	return errors.Join(errs...)
}

// killStalled kills the WAL senders StallReplication stopped: stopped, they
// would not see their postmaster die.
func (c *Cluster) killStalled() {
	for _, pid := range c.stalled {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	c.stalled = nil
}

// stopProcess sends SIGTERM to cmd's process group, SIGKILL after grace,
// and waits for it to exit.
func stopProcess(cmd *exec.Cmd, exited chan struct{}, grace time.Duration) error {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	return fmt.Errorf("patroni: %s did not stop within %v: killed", filepath.Base(cmd.Path), grace)
}

// waitGone waits until no process has pid.
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("patroni: postmaster %d did not stop within %v: killed", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// spawn starts a long-lived process, in a process group of its own, as
// c.runAs when set, its output appended to DIR/name.log.
func (c *Cluster) spawn(name, bin string, args ...string) (*exec.Cmd, error) {
	log, err := os.OpenFile(filepath.Join(c.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c.logs = append(c.logs, log)
	cmd := c.command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("patroni: start %s: %w", bin, err)
	}
	return cmd, nil
}

func (c *Cluster) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs, "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "HOME="+c.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

func (c *Cluster) patronictl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := c.command(ctx, "patronictl", append([]string{"-c", c.Nodes[0].config}, args...)...).CombinedOutput()
	return string(out), err
}

// prepareDir creates the directory and, as root, gives it to the postgres
// user.
func (c *Cluster) prepareDir() error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("patroni: %w", err)
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return fmt.Errorf("patroni: %w", err)
	}
	if c.runAs == "" {
		return nil
	}
	u, err := user.Lookup(c.runAs)
	if err != nil {
		return fmt.Errorf("patroni: running as root, PostgreSQL must run as user %q: %w", c.runAs, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(c.dir, uid, gid)
}

// writeConfig writes n's Patroni configuration (JSON is YAML).
func (c *Cluster) writeConfig(n *Node, etcd, bin string, sync bool) error {
	api := fmt.Sprintf("127.0.0.1:%d", n.API)
	pg := fmt.Sprintf("127.0.0.1:%d", n.Port)
	trust := []string{"local all all trust", "host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"}
	cfg := map[string]any{
		"scope": scope,
		"name":  n.Name,
		"log":   map[string]any{"level": "INFO"},
		"restapi": map[string]any{
			"listen": api, "connect_address": api,
		},
		"etcd3": map[string]any{"hosts": etcd},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				// A dead leader's key expires after ttl; loop_wait is how
				// often each Patroni looks. Small, for a quick failover.
				"ttl": 10, "loop_wait": 1, "retry_timeout": 3,
				"maximum_lag_on_failover": 16 << 20,
				// A crashed primary is failed over at once, not restarted.
				"primary_start_timeout": 0,
				"synchronous_mode":      sync,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters": map[string]any{
						"wal_log_hints":   "on", // pg_rewind rewinds the old primary
						"max_connections": 200,
						"shared_buffers":  "128MB",
						"fsync":           "off", // the machine does not crash in these tests
						"wal_keep_size":   "256MB",
					},
				},
			},
			"initdb": []any{map[string]any{"encoding": "UTF8"}, map[string]any{"locale": "C"}},
		},
		"postgresql": map[string]any{
			"listen": pg, "connect_address": pg,
			"data_dir": n.dataDir, "bin_dir": bin,
			"pgpass": filepath.Join(c.dir, n.Name+".pgpass"),
			"pg_hba": trust,
			"remove_data_directory_on_rewind_failure":     true,
			"remove_data_directory_on_diverged_timelines": true,
			"authentication": map[string]any{
				"superuser":   map[string]any{"username": pgUser},
				"replication": map[string]any{"username": pgUser},
				"rewind":      map[string]any{"username": pgUser},
			},
			"parameters": map[string]any{
				"unix_socket_directories": c.dir,
				"log_min_messages":        "warning",
			},
		},
		"tags": map[string]any{"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.config, b, 0o644); err != nil {
		return fmt.Errorf("patroni: %w", err)
	}
	return nil
}

// poll calls cond every 50 ms until it reports done or an error, and fails
// after timeout (a guard against a hang: loaded machines are slow).
func (c *Cluster) poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-c.done:
			return fmt.Errorf("patroni: etcd exited (see %s)", filepath.Join(c.dir, "etcd.log"))
		default:
		}
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("patroni: not within %v: %s (logs in %s)", timeout, what, c.dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// postmasterPID reads the postmaster's pid from dataDir.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("patroni: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("patroni: postmaster.pid in %s: %q", dataDir, first)
	}
	return pid, nil
}

func getJSON(ctx context.Context, u string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.Unmarshal(b, out)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("patroni: pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartTest starts a cluster for a test in a directory of its own, stopped
// when the test ends (its files kept when the test failed). It skips the
// test, saying why, when Patroni or etcd is not installed, unless
// ORDO_REQUIRE_HA=1 (as in CI), which fails it instead.
func StartTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if m := Missing(); m != "" {
		if os.Getenv("ORDO_REQUIRE_HA") == "1" {
			t.Fatalf("ORDO_REQUIRE_HA=1 but %s", m)
		}
		t.Skip(m)
	}
	dir, err := os.MkdirTemp("", "ordo-patroni-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user enters it
		t.Fatal(err)
	}
	opts.Dir = filepath.Join(dir, "ha")
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("the Patroni cluster's files and logs are kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return c
}
