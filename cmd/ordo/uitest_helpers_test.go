package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ordoflow/ordo/internal/apicontract"
	"github.com/ordoflow/ordo/internal/bench"
	"github.com/ordoflow/ordo/internal/pgtest"
)

// The UI tests run a real server (API, UI, projector, timers) and a worker
// in the test process, on a fresh database, and drive the UI in headless
// Chromium.

const chromiumPath = "/usr/bin/chromium"

// uiEnv is a server and a worker on one database, and a browser.
type uiEnv struct {
	t       *testing.T
	url     string
	pool    *pgxpool.Pool
	browser context.Context
	blobDir string // the server's blob store, a directory
}

// syncBuffer collects the server's log for a failing test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startUI starts a server and a worker on queues, in process, and a
// headless Chromium. Everything stops when the test ends: the browser
// first, so that its open event streams end before the server does.
func startUI(t *testing.T, queues ...string) *uiEnv {
	t.Helper()
	return startUIWith(t, serverOptions{}, queues...)
}

// startUIWith is startUI with the server's options (its address and blob
// store are the test's).
func startUIWith(t *testing.T, so serverOptions, queues ...string) *uiEnv {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser tests need Chromium at %s (apt-get install chromium): %v", chromiumPath, err)
	}
	pool := pgtest.Pool(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	blobDir := t.TempDir()
	so.addr, so.blobStore = "127.0.0.1:0", "file://"+blobDir
	srv, err := newServer(ctx, pool, so, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv.handler = apicontract.Handler(t, srv.handler) // the API's answers to the pages and tests must match its document
	ready := make(chan string, 1)
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.run(ctx, func(addr string) { ready <- addr }) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-serverDone:
		cancel()
		t.Fatalf("server stopped: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("server did not start in 20s")
	}
	workerDone := make(chan error, 1)
	if len(queues) > 0 {
		go func() {
			workerDone <- runWorker(ctx, pool, srv.store, workerOptions{
				queues: queues, concurrency: 10, workspaceDir: t.TempDir(),
				fetchCooldown: 5 * time.Millisecond, fetchPollInterval: 50 * time.Millisecond, shutdownGrace: 5 * time.Second,
			}, bench.NoopHandlers(), logger)
		}()
	} else {
		workerDone <- nil
	}
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{workerDone, serverDone} {
			select {
			case err := <-ch:
				if err != nil {
					t.Errorf("stop: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("server or worker did not stop in 30s")
			}
		}
		if t.Failed() {
			t.Logf("--- server log:\n%s", tail(logs.String(), 6000))
		}
	})
	e := &uiEnv{t: t, url: "http://" + addr, pool: pool, blobDir: blobDir}
	e.browser = newBrowser(t)
	return e
}

// sharedBrowser is the one headless Chromium of the package's tests,
// started by the first that needs it and stopped by TestMain: each test
// gets a browser context of its own in it, as fresh as a new profile.
var sharedBrowser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

// newBrowser returns a fresh browser context (no cookies, storage or cache
// of other tests) in the shared Chromium; its tabs close when the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	sharedBrowser.once.Do(startSharedBrowser)
	if sharedBrowser.err != nil {
		t.Fatalf("start chromium: %v", sharedBrowser.err)
	}
	ctx, cancel := chromedp.NewContext(sharedBrowser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a browser context: %v", err)
	}
	return ctx
}

func startSharedBrowser() {
	profile, err := os.MkdirTemp("", "ordo-ui-chromium-")
	if err != nil {
		sharedBrowser.err = err
		return
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 1000),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	sharedBrowser.ctx = ctx
	sharedBrowser.cancel = func() {
		cancelCtx()
		cancelAlloc()
		os.RemoveAll(profile)
	}
	sharedBrowser.err = chromedp.Do(ctx)
}

// stopSharedBrowser stops the shared Chromium, if a test started it.
func stopSharedBrowser() {
	if sharedBrowser.cancel != nil {
		sharedBrowser.cancel()
	}
}

// tab opens a new browser tab for a subtest. Uncaught JavaScript errors
// and console.error calls of the page fail the test.
func (e *uiEnv) tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(e.browser)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	var (
		mu     sync.Mutex
		errors []string
	)
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// the browser's own log (Source set) reports failed requests,
			// such as a 404 the page expects and handles
			if m.IsException() || m.Type == chromedp.ConsoleError && m.Source == "" {
				mu.Lock()
				errors = append(errors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		mu.Lock()
		for _, msg := range errors {
			t.Errorf("JavaScript %s", msg)
		}
		mu.Unlock()
		cancelTimeout()
		cancel()
	})
	return ctx
}

// run runs browser actions, failing the test with what it was doing.
func (e *uiEnv) run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// open loads a page of the UI and waits until its module rendered.
func (e *uiEnv) open(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	e.run(t, ctx, "open "+path, chromedp.Navigate(e.url+path), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)))
}

// waitJS polls a JavaScript expression until it is true.
func (e *uiEnv) waitJS(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main') ? document.querySelector('main').innerText.slice(0, 1500) : ''`))
		t.Fatalf("waiting for %s: %v\n%s\npage text:\n%s", what, err, expr, body)
	}
}

// evalJS evaluates a JavaScript expression (awaiting a promise).
func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// js is an action that runs a script for its effect.
func js(script string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](script)
}

// fill sets the value of a form field, as a user would.
func fill(selector, value string) chromedp.Action[chromedp.Void] {
	return js(fmt.Sprintf(`(() => { const el = document.querySelector(%s); el.value = %s; el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); })()`, jsString(selector), jsString(value)))
}

// screenshot saves the page as artifacts/screenshots/NAME.png at the
// repository root.
func (e *uiEnv) screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := filepath.Join("..", "..", "artifacts", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// api sends a JSON request to the server's API and decodes the answer
// into out (when not nil); it returns the status.
func (e *uiEnv) api(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+"/api/v1"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// mustAPI is api that fails the test unless the status is 2xx.
func (e *uiEnv) mustAPI(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var raw json.RawMessage
	if code := e.api(t, method, path, body, &raw); code >= 300 {
		t.Fatalf("%s %s: status %d", method, path, code)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

type apiState struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

type apiRun struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	State    apiState  `json:"state"`
	TaskRuns []apiTask `json:"task_runs"`
}

type apiTask struct {
	ID       string   `json:"id"`
	TaskName string   `json:"task_name"`
	State    apiState `json:"state"`
}

type apiDeployment struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// deploy saves a deployment and returns it.
func (e *uiEnv) deploy(t *testing.T, spec map[string]any) apiDeployment {
	t.Helper()
	var d apiDeployment
	e.mustAPI(t, http.MethodPost, "/deployments", spec, &d)
	return d
}

// startRun creates a run of a deployment.
func (e *uiEnv) startRun(t *testing.T, deploymentID string, body map[string]any) apiRun {
	t.Helper()
	var r apiRun
	e.mustAPI(t, http.MethodPost, "/deployments/"+deploymentID+"/runs", body, &r)
	return r
}

// waitRun polls a run until cond holds.
func (e *uiEnv) waitRun(t *testing.T, id string, what string, cond func(apiRun) bool) apiRun {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var r apiRun
		e.mustAPI(t, http.MethodGet, "/runs/"+id, nil, &r)
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: waited 60s for %s; it is %s/%s", id, what, r.State.Type, r.State.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func terminal(r apiRun) bool {
	switch r.State.Type {
	case "COMPLETED", "FAILED", "CANCELLED", "CRASHED":
		return true
	}
	return false
}

// shellTask is a command task that runs a shell script.
func shellTask(name, script string, dependsOn ...string) map[string]any {
	t := map[string]any{"name": name, "command": []string{"sh", "-c", script}}
	if len(dependsOn) > 0 {
		t["depends_on"] = dependsOn
	}
	return t
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func sel(format string, args ...any) string { return fmt.Sprintf(format, args...) }
