package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/ordoflow/ordo/riverjob"
)

// No cluster runs in CI, so deploy/kubernetes is checked statically: every
// document decodes strictly into the Kubernetes API types (a misspelt field
// fails), and the references between them, to the Dockerfile and to the
// ordo CLI hold.

const kubeDir = "../../deploy/kubernetes"

// KEDA's types are not in k8s.io/api: the fields the manifests use, named
// as in KEDA's keda.sh/v1alpha1 API.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// decodeStrict decodes one YAML document into v, failing on duplicate keys
// and on fields v does not have.
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// decodeManifest decodes a document into the type of its apiVersion and kind.
func decodeManifest(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var v any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		v = &corev1.Namespace{}
	case "v1 Secret":
		v = &corev1.Secret{}
	case "v1 Service":
		v = &corev1.Service{}
	case "apps/v1 Deployment":
		v = &appsv1.Deployment{}
	case "keda.sh/v1alpha1 ScaledObject":
		v = &scaledObject{}
	case "keda.sh/v1alpha1 TriggerAuthentication":
		v = &triggerAuthentication{}
	default:
		return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	return v, decodeStrict(doc, v)
}

var (
	docSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	commentLine  = regexp.MustCompile(`(?m)^\s*#.*$`)
)

type kubeObjects struct {
	namespaces  []*corev1.Namespace
	secrets     map[string]*corev1.Secret
	services    []*corev1.Service
	deployments map[string]*appsv1.Deployment
	scaled      []*scaledObject
	auths       map[string]*triggerAuthentication
	namespaceOf map[string]string // "Kind/name" → namespace
}

func readKubernetes(t *testing.T) (kustomization, kubeObjects) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(kubeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	o := kubeObjects{secrets: map[string]*corev1.Secret{}, deployments: map[string]*appsv1.Deployment{}, auths: map[string]*triggerAuthentication{}, namespaceOf: map[string]string{}}
	for _, file := range k.Resources {
		b, err := os.ReadFile(filepath.Join(kubeDir, file))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", file, err)
		}
		for i, doc := range docSeparator.Split(string(b), -1) {
			if strings.TrimSpace(commentLine.ReplaceAllString(doc, "")) == "" {
				continue
			}
			v, err := decodeManifest([]byte(doc))
			if err != nil {
				t.Errorf("%s document %d: %v", file, i+1, err)
				continue
			}
			var meta metav1.ObjectMeta
			switch v := v.(type) {
			case *corev1.Namespace:
				o.namespaces, meta = append(o.namespaces, v), v.ObjectMeta
			case *corev1.Secret:
				o.secrets[v.Name], meta = v, v.ObjectMeta
			case *corev1.Service:
				o.services, meta = append(o.services, v), v.ObjectMeta
			case *appsv1.Deployment:
				o.deployments[v.Name], meta = v, v.ObjectMeta
			case *scaledObject:
				o.scaled, meta = append(o.scaled, v), v.ObjectMeta
			case *triggerAuthentication:
				o.auths[v.Name], meta = v, v.ObjectMeta
			}
			o.namespaceOf[fmt.Sprintf("%T/%s", v, meta.Name)] = meta.Namespace
		}
	}
	return k, o
}

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	k, o := readKubernetes(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}
	// every manifest in the folder is applied
	files, _ := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not in kustomization.yaml's resources", base)
		}
	}
	if len(o.namespaces) != 1 || o.namespaces[0].Name != k.Namespace {
		t.Errorf("want one Namespace, the kustomization's %q", k.Namespace)
	}
	for obj, ns := range o.namespaceOf {
		if ns != k.Namespace && !strings.HasPrefix(obj, "*v1.Namespace/") {
			t.Errorf("%s is in namespace %q, want %q", obj, ns, k.Namespace)
		}
	}
	if len(o.deployments) < 2 || len(o.services) == 0 || len(o.scaled) == 0 || len(o.auths) == 0 || len(o.secrets) == 0 {
		t.Errorf("missing objects: %d deployments, %d services, %d scaled objects, %d trigger authentications, %d secrets",
			len(o.deployments), len(o.services), len(o.scaled), len(o.auths), len(o.secrets))
	}
}

// A misspelt field, in a Kubernetes type and in a KEDA one, fails.
func TestKubernetesManifestMisspeltFieldFails(t *testing.T) {
	t.Parallel()
	for file, typo := range map[string][2]string{
		"server.yaml":    {"readinessProbe:", "readinesProbe:"},
		"worker-ml.yaml": {"scaleTargetRef:", "scaleTargetRf:"},
		"keda-auth.yaml": {"secretTargetRef:", "secretTargetRefs:"},
	} {
		b, err := os.ReadFile(filepath.Join(kubeDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(typo[0])) {
			t.Fatalf("%s has no %s", file, typo[0])
		}
		bad := strings.Replace(string(b), typo[0], typo[1], 1)
		failed := false
		for _, doc := range docSeparator.Split(bad, -1) {
			if _, err := decodeManifest([]byte(doc)); err != nil {
				if !strings.Contains(err.Error(), strings.TrimSuffix(typo[1], ":")) {
					t.Errorf("%s with %s: the error does not name the field: %v", file, typo[1], err)
				}
				failed = true
			}
		}
		if !failed {
			t.Errorf("%s with %s decodes", file, typo[1])
		}
	}
}

// ordoFlags parses a container's args as the ordo binary would, failing the
// test unless they are a real command with flags it has.
func ordoFlags(t *testing.T, where string, c corev1.Container) (cmdPath string, flags *pflag.FlagSet) {
	t.Helper()
	if len(c.Command) > 0 && !slices.Equal(c.Command, []string{"ordo"}) {
		t.Fatalf("%s: command %v overrides the image's ordo entrypoint", where, c.Command)
	}
	root := newRootCommand()
	cmd, rest, err := root.Find(c.Args)
	if err == nil && cmd == root {
		err = fmt.Errorf("no subcommand")
	}
	if err == nil {
		err = cmd.ParseFlags(rest)
	}
	if err != nil {
		t.Fatalf("%s: `ordo %s`: %v", where, strings.Join(c.Args, " "), err)
	}
	return cmd.CommandPath(), cmd.Flags()
}

func flagValue(t *testing.T, fs *pflag.FlagSet, name string) string {
	t.Helper()
	f := fs.Lookup(name)
	if f == nil {
		t.Fatalf("no flag --%s", name)
	}
	return f.Value.String()
}

// dockerUID is the numeric user the Dockerfile's images run as.
func dockerUID(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	users := regexp.MustCompile(`(?m)^USER (\S+)$`).FindAllStringSubmatch(string(b), -1)
	last := users[len(users)-1][1]
	uid, err := strconv.ParseInt(last, 10, 64)
	if err != nil {
		t.Fatalf("the Dockerfile's last USER %q is not numeric: runAsNonRoot cannot check it", last)
	}
	return uid
}

// readmeImages maps the images deploy/kubernetes/README.md builds to their
// Dockerfile stages (`docker build --target STAGE -t IMAGE .`).
func readmeImages(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubeDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	df, _ := os.ReadFile("../../Dockerfile")
	images := map[string]string{}
	for _, m := range regexp.MustCompile(`docker build --target (\S+) -t (\S+) \.`).FindAllStringSubmatch(string(b), -1) {
		if !regexp.MustCompile(`(?m)^FROM \S+ AS ` + regexp.QuoteMeta(m[1]) + `$`).Match(df) {
			t.Errorf("README.md builds target %s, not a stage of the Dockerfile", m[1])
		}
		images[m[2]] = m[1]
	}
	return images
}

func TestKubernetesManifestsReferences(t *testing.T) {
	t.Parallel()
	_, o := readKubernetes(t)
	images := readmeImages(t)
	uid := dockerUID(t)

	secretKey := func(where, name, key string) {
		s, ok := o.secrets[name]
		if !ok {
			t.Errorf("%s: no Secret %s", where, name)
			return
		}
		if _, ok := s.StringData[key]; !ok {
			if _, ok := s.Data[key]; !ok {
				t.Errorf("%s: Secret %s has no key %s", where, name, key)
			}
		}
	}
	auths := map[string]bool{}
	for name, a := range o.auths {
		for _, r := range a.Spec.SecretTargetRef {
			secretKey("TriggerAuthentication "+name, r.Name, r.Key)
			auths[name] = auths[name] || r.Parameter == "connection"
		}
	}

	servers, workers := 0, map[string]*appsv1.Deployment{}
	for name, d := range o.deployments {
		where := "Deployment " + name
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: its selector does not select its own pods (%v)", where, err)
		}
		pod := d.Spec.Template.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != uid {
			t.Errorf("%s: want runAsNonRoot and runAsUser %d, the Dockerfile's user", where, uid)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: want one container", where)
		}
		c := pod.Containers[0]
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				secretKey(where+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "ORDO_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}) {
			t.Errorf("%s: ORDO_DATABASE_URL does not come from the Secret", where)
		}
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: want a read-only root file system and no privilege escalation", where)
		}
		// with a read-only root, temporary files need a volume
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" }) {
			t.Errorf("%s: /tmp is not a volume, and the root file system is read-only", where)
		}
		for _, m := range c.VolumeMounts {
			if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
				t.Errorf("%s: mounts volume %s, which the pod does not have", where, m.Name)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: want CPU and memory requests and a memory limit", where)
		}

		cmdPath, flags := ordoFlags(t, where, c)
		switch cmdPath {
		case "ordo server":
			servers++
			if images[c.Image] != "server" {
				t.Errorf("%s: image %s is not the server image README.md builds (%v)", where, c.Image, images)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("%s: want at least 2 replicas", where)
			}
			checkServer(t, where, c, flags, o.services, d.Spec.Template.Labels)
		case "ordo worker":
			if images[c.Image] != "worker-python" {
				t.Errorf("%s: image %s is not the worker image README.md builds (%v)", where, c.Image, images)
			}
			checkWorker(t, where, pod, c, flags)
			workers[name] = d
		default:
			t.Errorf("%s runs %s", where, cmdPath)
		}
	}
	if servers != 1 || len(workers) == 0 {
		t.Fatalf("want one server Deployment and worker Deployments, got %d and %d", servers, len(workers))
	}

	// one ScaledObject per worker Deployment, on that worker's queue
	scaled := map[string]bool{}
	for _, so := range o.scaled {
		where := "ScaledObject " + so.Name
		ref := so.Spec.ScaleTargetRef
		d, ok := workers[ref.Name]
		if !ok || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
			t.Errorf("%s: targets %s %s %s, not a worker Deployment", where, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		if scaled[ref.Name] {
			t.Errorf("%s: Deployment %s has two ScaledObjects", where, ref.Name)
		}
		scaled[ref.Name] = true
		_, flags := ordoFlags(t, where, d.Spec.Template.Spec.Containers[0])
		queues, _ := flags.GetStringSlice("queue")
		if len(so.Spec.Triggers) != 1 || len(queues) != 1 {
			t.Errorf("%s: want one trigger for a worker of one queue, got %d for queues %v", where, len(so.Spec.Triggers), queues)
			continue
		}
		tr := so.Spec.Triggers[0]
		if tr.Type != "postgresql" {
			t.Errorf("%s: trigger type %q, want postgresql", where, tr.Type)
		}
		if want := riverjob.ScalerQuery(queues[0]); tr.Metadata["query"] != want {
			t.Errorf("%s: query\n%s\nwant riverjob.ScalerQuery(%q):\n%s", where, tr.Metadata["query"], queues[0], want)
		}
		// one replica per --concurrency task runs
		if c := flagValue(t, flags, "concurrency"); tr.Metadata["targetQueryValue"] != c {
			t.Errorf("%s: targetQueryValue %q, want the worker's --concurrency %s", where, tr.Metadata["targetQueryValue"], c)
		}
		if tr.AuthenticationRef == nil || !auths[tr.AuthenticationRef.Name] {
			t.Errorf("%s: authenticationRef names no TriggerAuthentication giving the connection string", where)
		}
		if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < 1 {
			t.Errorf("%s: no maxReplicaCount", where)
		}
	}
	for name, d := range workers {
		if !scaled[name] {
			t.Errorf("worker Deployment %s has no ScaledObject", name)
		}
		// workers serve no HTTP: the Service must not send requests to them
		for _, s := range o.services {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("Service %s selects the pods of worker Deployment %s", s.Name, name)
			}
		}
	}
}

func checkServer(t *testing.T, where string, c corev1.Container, flags *pflag.FlagSet, services []*corev1.Service, podLabels map[string]string) {
	t.Helper()
	addr := flagValue(t, flags, "addr")
	host, port, _ := strings.Cut(addr, ":")
	if host != "0.0.0.0" && host != "" {
		t.Errorf("%s: --addr %s is not reachable from outside the pod", where, addr)
	}
	var named string
	for _, p := range c.Ports {
		if strconv.Itoa(int(p.ContainerPort)) == port {
			named = p.Name
		}
	}
	if named == "" {
		t.Fatalf("%s: listens on %s, which is no containerPort", where, port)
	}
	for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path ||
			(probe.HTTPGet.Port.String() != named && probe.HTTPGet.Port.String() != port) {
			t.Errorf("%s: want an HTTP probe of %s on port %s", where, path, named)
		}
	}
	if len(services) != 1 {
		t.Fatalf("want one Service, got %d", len(services))
	}
	s := services[0]
	for k, v := range s.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service %s selects %s=%s, which the server's pods do not have", s.Name, k, v)
		}
	}
	if len(s.Spec.Selector) == 0 || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.String() != named {
		t.Errorf("Service %s does not send to the server's port %s", s.Name, named)
	}
}

func checkWorker(t *testing.T, where string, pod corev1.PodSpec, c corev1.Container, flags *pflag.FlagSet) {
	t.Helper()
	if flagValue(t, flags, "python") == "" {
		t.Errorf("%s: no --python", where)
	}
	ws := flagValue(t, flags, "workspace-dir")
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == ws }) {
		t.Errorf("%s: --workspace-dir %q is not a mounted volume", where, ws)
	}
	for _, v := range pod.Volumes {
		if v.EmptyDir == nil {
			t.Errorf("%s: volume %s is not an emptyDir", where, v.Name)
		}
	}
	// SIGTERM (jobs.Worker.Stop): --shutdown-grace for running tasks, then
	// up to 10 s to kill what still runs (KillGrace 5 s + 5 s), then up to
	// 5 s to record the stop
	grace, err := time.ParseDuration(flagValue(t, flags, "shutdown-grace"))
	if err != nil {
		t.Fatal(err)
	}
	need := grace + 5*time.Second + 5*time.Second + 5*time.Second
	if p := pod.TerminationGracePeriodSeconds; p == nil || time.Duration(*p)*time.Second < need {
		t.Errorf("%s: terminationGracePeriodSeconds is shorter than the worker's graceful stop (%s) or unset", where, need)
	}
}

// The README's commands name objects the manifests have, files that exist,
// and ordo commands and flags the binary has.
func TestKubernetesReadmeCommands(t *testing.T) {
	t.Parallel()
	_, o := readKubernetes(t)
	b, err := os.ReadFile(filepath.Join(kubeDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, want := range []string{"kubectl apply -k deploy/kubernetes", "kubectl -n ordo port-forward svc/"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	for _, m := range regexp.MustCompile(`(deploy|svc)/([a-z0-9-]+)`).FindAllStringSubmatch(readme, -1) {
		switch _, isDeployment := o.deployments[m[2]]; {
		case m[1] == "deploy" && !isDeployment && m[2] != "kubernetes":
			t.Errorf("README.md: %s: no such Deployment", m[0])
		case m[1] == "svc" && !slices.ContainsFunc(o.services, func(s *corev1.Service) bool { return s.Name == m[2] }):
			t.Errorf("README.md: %s: no such Service", m[0])
		}
	}
	// the query documented is the one the ScaledObjects run
	sql := regexp.MustCompile("(?s)```sql\n(.*?)```").FindStringSubmatch(readme)
	if sql == nil || strings.Join(strings.Fields(sql[1]), " ") != riverjob.ScalerQuery("ml") {
		t.Errorf("README.md's query is not riverjob.ScalerQuery(\"ml\"):\n%s", riverjob.ScalerQuery("ml"))
	}
	n := 0
	for _, m := range regexp.MustCompile("(?m)(?:^bin/ordo|-- ordo) ([^`\\n|#]+)").FindAllStringSubmatch(readme, -1) {
		args := strings.Fields(m[1])
		checkOrdoArgs(t, "README.md: "+m[0], args)
		for i, a := range args {
			if (a == "-f" || a == "--file") && i+1 < len(args) && args[i+1] != "-" {
				if _, err := os.Stat(filepath.Join("../..", args[i+1])); err != nil {
					t.Errorf("README.md: %s: %v", m[0], err)
				}
			}
		}
		n++
	}
	for _, m := range regexp.MustCompile(`(?m)^sed .* (examples/\S+) \|`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join("../..", m[1])); err != nil {
			t.Errorf("README.md: %v", err)
		}
		n++
	}
	if n < 4 {
		t.Errorf("README.md shows %d ordo commands; want deploying, running, a token and the example file", n)
	}
}
