package main

import (
	"os"
	"regexp"
	"slices"
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
	if !slices.ContainsFunc(admin.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/pgadmin4/servers.json:ro") }) {
		t.Error("pgadmin does not get the pre-registered server list")
	}
	if _, err := os.Stat("../../deploy/pgadmin/servers.json"); err != nil {
		t.Error(err)
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
