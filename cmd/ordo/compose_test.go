package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// No Docker engine runs in CI, so docker-compose.yml and the Dockerfile are
// checked statically: the services, ports, volumes and healthchecks a user
// relies on, and every ordo command they run against the real CLI.

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	return c
}

// checkOrdoArgs fails unless args (after the ordo entrypoint) name a real
// command and only flags it has.
func checkOrdoArgs(t *testing.T, where string, args []string) {
	t.Helper()
	root := newRootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Errorf("%s: `ordo %s` is not a command: %v", where, strings.Join(args, " "), err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: `ordo %s`: %v", where, strings.Join(args, " "), err)
	}
}

func TestComposeServices(t *testing.T) {
	c := readCompose(t)
	for _, name := range []string{"pgdatabase", "pgadmin", "ordo", "worker"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %s missing", name)
		}
	}
	db := c.Services["pgdatabase"]
	if !strings.HasPrefix(db.Image, "postgres:15") {
		t.Errorf("pgdatabase image %q, want postgres:15", db.Image)
	}
	if db.Healthcheck == nil || !strings.Contains(strings.Join(db.Healthcheck.Test, " "), "pg_isready") {
		t.Error("pgdatabase has no pg_isready healthcheck")
	}
	if !slices.ContainsFunc(db.Volumes, func(v string) bool { return strings.HasPrefix(v, "pgdata:/var/lib/postgresql/data") }) {
		t.Error("pgdatabase data is not on the named volume pgdata")
	}

	admin := c.Services["pgadmin"]
	if !strings.HasPrefix(admin.Image, "dpage/pgadmin4") {
		t.Errorf("pgadmin image %q", admin.Image)
	}
	for _, k := range []string{"PGADMIN_DEFAULT_EMAIL", "PGADMIN_DEFAULT_PASSWORD"} {
		if !regexp.MustCompile(`^\$\{[A-Z_]+:-.+\}$`).MatchString(admin.Environment[k]) {
			t.Errorf("pgadmin %s = %q: want a variable with a documented default", k, admin.Environment[k])
		}
	}

	ordo := c.Services["ordo"]
	if !slices.Contains(ordo.Ports, "4200:4200") {
		t.Errorf("ordo ports %v, want 4200:4200", ordo.Ports)
	}
	if ordo.DependsOn["pgdatabase"].Condition != "service_healthy" {
		t.Error("ordo does not wait for a healthy database")
	}
	if !slices.Contains(ordo.Command, "server") || !slices.Contains(ordo.Command, "--migrate") {
		t.Errorf("ordo command %v: want the server, migrating on start", ordo.Command)
	}
	checkOrdoArgs(t, "service ordo", ordo.Command)
	if ordo.Healthcheck == nil || ordo.Healthcheck.Test[0] != "CMD" || ordo.Healthcheck.Test[1] != "ordo" {
		t.Fatal("ordo has no healthcheck running the ordo binary")
	}
	checkOrdoArgs(t, "ordo healthcheck", ordo.Healthcheck.Test[2:])

	worker := c.Services["worker"]
	if worker.Command[0] != "worker" || !slices.Contains(worker.Command, "ml") {
		t.Errorf("worker command %v: want `worker -q ml`", worker.Command)
	}
	checkOrdoArgs(t, "service worker", worker.Command)
	for name, svc := range map[string]any{"ordo": ordo.Environment, "worker": worker.Environment} {
		env := svc.(map[string]string)
		if !strings.Contains(env["ORDO_DATABASE_URL"], "@pgdatabase:5432/") {
			t.Errorf("%s does not reach the pgdatabase service: %q", name, env["ORDO_DATABASE_URL"])
		}
	}
	for _, v := range []string{"pgdata", "pgadmin", "workspace"} {
		if _, ok := c.Volumes[v]; !ok {
			t.Errorf("named volume %s missing", v)
		}
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	stages := regexp.MustCompile(`(?m)^FROM \S+ AS (\S+)$`).FindAllStringSubmatch(df, -1)
	var names []string
	for _, s := range stages {
		names = append(names, s[1])
	}
	c := readCompose(t)
	for _, svc := range []string{"ordo", "worker"} {
		build, _ := c.Services[svc].Build.(map[string]any)
		target, _ := build["target"].(string)
		if !slices.Contains(names, target) {
			t.Errorf("service %s builds target %q; the Dockerfile has stages %v", svc, target, names)
		}
	}
	for _, want := range []string{"./cmd/ordo", `ENTRYPOINT ["ordo"]`, "EXPOSE 4200", "python3-sklearn", "python3-pandas", "python3-psycopg2"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// the Go version of the build image is the one go.mod asks for
	mod, _ := os.ReadFile("../../go.mod")
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mod))
	if goVersion == nil || !strings.Contains(df, "golang:"+goVersion[1]) {
		t.Errorf("Dockerfile does not build with Go %v", goVersion)
	}
	for _, m := range regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindAllStringSubmatch(df, -1) {
		var args []string
		if err := yaml.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatal(err)
		}
		checkOrdoArgs(t, "Dockerfile CMD", args)
	}
}

// pgadmin registers the database with the user and database name that the
// pgdatabase service gets, whatever .env says: its entrypoint writes the
// server list from the same variables. The script is run here as the
// container would run it.
func TestComposePgadminFollowsEnv(t *testing.T) {
	c := readCompose(t)
	db, admin := c.Services["pgdatabase"], c.Services["pgadmin"]
	for _, k := range []string{"POSTGRES_USER", "POSTGRES_DB"} {
		if admin.Environment[k] == "" || admin.Environment[k] != db.Environment[k] {
			t.Errorf("pgadmin %s = %q, pgdatabase %s = %q: want the same", k, admin.Environment[k], k, db.Environment[k])
		}
	}
	if admin.Environment["PGADMIN_REPLACE_SERVERS_ON_STARTUP"] != "True" {
		t.Error("pgadmin keeps the server list of its first start: a changed .env is not followed")
	}
	if !slices.Equal(admin.Entrypoint, []string{"/bin/sh", "/ordo/entrypoint.sh"}) {
		t.Fatalf("pgadmin entrypoint %v: want the script that writes the server list", admin.Entrypoint)
	}
	if !slices.Contains(admin.Volumes, "./deploy/pgadmin:/ordo:ro") {
		t.Fatalf("pgadmin volumes %v: the entrypoint script is not mounted at /ordo", admin.Volumes)
	}
	if slices.ContainsFunc(admin.Volumes, func(v string) bool { return strings.Contains(v, "servers.json") }) {
		t.Error("pgadmin mounts a fixed servers.json, which does not follow .env")
	}

	// POSTGRES_USER and POSTGRES_DB as .env could set them
	out := filepath.Join(t.TempDir(), "servers.json")
	cmd := exec.Command("/bin/sh", "../../deploy/pgadmin/entrypoint.sh")
	cmd.Env = append(os.Environ(), "POSTGRES_USER=alice", "POSTGRES_DB=shop", "PGADMIN_SERVER_JSON_FILE="+out)
	msg, _ := cmd.CombinedOutput() // it ends exec'ing pgadmin's /entrypoint.sh, absent here
	if !strings.Contains(string(msg), "/entrypoint.sh") {
		t.Errorf("the script does not hand over to pgadmin's /entrypoint.sh: %s", msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the entrypoint wrote no server list: %v\n%s", err, msg)
	}
	var servers struct {
		Servers map[string]struct {
			Host, MaintenanceDB, Username string
			Port                          int
		}
	}
	if err := json.Unmarshal(b, &servers); err != nil {
		t.Fatalf("server list is not JSON: %v\n%s", err, b)
	}
	s := servers.Servers["1"]
	if s.Host != "pgdatabase" || s.Port != 5432 || s.Username != "alice" || s.MaintenanceDB != "shop" {
		t.Errorf("server list %+v: want pgdatabase:5432, user alice, database shop", s)
	}

	// a value that cannot go into the JSON as it is is refused by name
	cmd = exec.Command("/bin/sh", "../../deploy/pgadmin/entrypoint.sh")
	cmd.Env = append(os.Environ(), `POSTGRES_USER=a"b`, "PGADMIN_SERVER_JSON_FILE="+out)
	msg, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "POSTGRES_USER") {
		t.Errorf("a user name with a quote: %v, %s; want a refusal naming POSTGRES_USER", err, msg)
	}
}

// No service publishes on the host's 5432, where a local PostgreSQL
// usually listens; the database's host port is a variable with another
// default.
func TestComposePorts(t *testing.T) {
	c := readCompose(t)
	for name, svc := range c.Services {
		for _, p := range svc.Ports {
			parts := strings.Split(p, ":")
			if len(parts) < 2 {
				t.Errorf("%s publishes %q: name the host port", name, p)
				continue
			}
			if host := parts[len(parts)-2]; host == "5432" {
				t.Errorf("%s publishes %q: the host's 5432 clashes with a local PostgreSQL", name, p)
			}
		}
	}
	ports := c.Services["pgdatabase"].Ports
	if len(ports) != 1 {
		t.Fatalf("pgdatabase ports %v: want one", ports)
	}
	m := regexp.MustCompile(`\$\{ORDO_PG_PORT:-(\d+)\}:5432$`).FindStringSubmatch(ports[0])
	if m == nil {
		t.Fatalf("pgdatabase publishes %q: want ${ORDO_PG_PORT:-N}:5432", ports[0])
	}
	if n, _ := strconv.Atoi(m[1]); n == 5432 {
		t.Errorf("ORDO_PG_PORT defaults to 5432")
	}
}

// The build context leaves out what a working copy holds besides the
// sources: the dev database (with a live socket), binaries, artifacts, .git.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.Trim(line, "/"))
		}
	}
	for _, want := range []string{".ordo", "bin", "artifacts", ".git"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not exclude %s (patterns %v)", want, patterns)
		}
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			t.Errorf(".dockerignore re-includes %s", p)
		}
	}
}

// The README's Docker commands name services that exist and ordo commands
// that parse, as run in the worker container (which has the examples).
func TestReadmeDockerCommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	c := readCompose(t)
	lines := regexp.MustCompile(`(?m)^docker compose exec (\S+) (.*?)\s*(#.*)?$`).FindAllStringSubmatch(string(b), -1)
	if len(lines) < 3 {
		t.Fatalf("the README shows %d `docker compose exec` commands; want seeding, deploying and running the example", len(lines))
	}
	var seeded, deployed bool
	for _, l := range lines {
		svc, args := l[1], strings.Fields(l[2])
		if _, ok := c.Services[svc]; !ok {
			t.Errorf("README: `docker compose exec %s`: no such service", svc)
			continue
		}
		switch args[0] {
		case "ordo":
			checkOrdoArgs(t, "README docker command", args[1:])
			deployed = deployed || slices.Contains(args, "deploy")
		case "python3":
			seeded = seeded || strings.HasSuffix(args[1], "seed.py")
			if _, err := os.Stat(filepath.Join("../..", args[1])); err != nil {
				t.Errorf("README: %s: %v", l[0], err)
			}
		}
		for _, a := range args {
			if strings.HasPrefix(a, "examples/") {
				if _, err := os.Stat(filepath.Join("../..", a)); err != nil {
					t.Errorf("README: %s: %v", l[0], err)
				}
			}
		}
	}
	if !seeded || !deployed {
		t.Errorf("README's Docker commands seed the example: %v, deploy it: %v", seeded, deployed)
	}
	if c.Services["worker"].Environment["ORDO_API_URL"] != "http://ordo:4200" {
		t.Error("ordo commands run in the worker container do not reach the ordo service")
	}
}
