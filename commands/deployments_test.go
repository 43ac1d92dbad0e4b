package commands_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/commands"
	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
	"github.com/ordoflow/ordo/internal/pgtest"
)

func deploymentSetup(t *testing.T) (*commands.DeploymentCommands, *eventstore.Store) {
	t.Helper()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, domain.NewRegistry())
	t.Cleanup(store.Close)
	return commands.NewDeploymentCommands(store), store
}

func deploymentSpec(name, description string) domain.DeploymentSpec {
	return domain.DeploymentSpec{Name: name, Description: description, Flow: domain.FlowSpec{Name: "f", Tasks: []domain.TaskSpec{
		{Name: "a", Command: []string{"true"}},
		{Name: "b", Command: []string{"true"}, DependsOn: []string{"a"}},
	}}}
}

func TestDeploymentSaveCreatesThenVersions(t *testing.T) {
	t.Parallel()
	c, store := deploymentSetup(t)
	ctx := context.Background()
	d, created, err := c.DeploymentSave(ctx, deploymentSpec("etl", "one"), "token:alice")
	if err != nil || !created || d.Version != 1 || d.Spec.WorkQueue != domain.DefaultWorkQueue {
		t.Fatalf("create: %v %v %+v", err, created, d)
	}
	same, created, err := c.DeploymentSave(ctx, deploymentSpec("etl", "one"), "token:alice")
	if err != nil || created || same.Version != 1 || same.Stream != 1 {
		t.Fatalf("unchanged save: %v %v %+v", err, created, same)
	}
	v2, created, err := c.DeploymentSave(ctx, deploymentSpec("etl", "two"), "token:bob")
	if err != nil || created || v2.ID != d.ID || v2.Version != 2 {
		t.Fatalf("update: %v %+v", err, v2)
	}
	envs, _ := store.ReadStream(ctx, store.Pool(), d.ID, 0)
	if len(envs) != 2 || envs[1].Metadata.Actor != "token:bob" {
		t.Fatalf("stream: %+v", envs)
	}
	if u, ok := envs[1].Event.(domain.DeploymentUpdated); !ok || len(u.Changed) != 1 || u.Changed[0] != "description" {
		t.Fatalf("update event: %+v", envs[1].Event)
	}
	got, err := c.DeploymentGet(ctx, d.ID)
	if err != nil || got.Spec.Description != "two" {
		t.Fatalf("get: %v %+v", err, got)
	}
	byName, err := c.DeploymentGetByName(ctx, "etl")
	if err != nil || byName.ID != d.ID {
		t.Fatalf("get by name: %v", err)
	}
	if _, _, err := c.DeploymentSave(ctx, domain.DeploymentSpec{Name: "bad name!"}, "x"); domain.ErrorCode(err) != domain.CodeInvalid {
		t.Fatalf("invalid spec: %v", err)
	}
}

func TestDeploymentPauseResumeDelete(t *testing.T) {
	t.Parallel()
	c, _ := deploymentSetup(t)
	ctx := context.Background()
	d, _, err := c.DeploymentSave(ctx, deploymentSpec("ml", ""), "t")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.DeploymentPause(ctx, d.ID, "t"); err != nil || !p.Paused {
		t.Fatalf("pause: %v %+v", err, p)
	}
	if p, err := c.DeploymentPause(ctx, d.ID, "t"); err != nil || !p.Paused || p.Stream != 2 {
		t.Fatalf("pause twice is a no-op: %v %+v", err, p)
	}
	if r, err := c.DeploymentResume(ctx, d.ID, "t"); err != nil || r.Paused {
		t.Fatalf("resume: %v %+v", err, r)
	}
	if _, err := c.DeploymentDelete(ctx, d.ID, "t"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"get":    second(c.DeploymentGet(ctx, d.ID)),
		"pause":  second(c.DeploymentPause(ctx, d.ID, "t")),
		"delete": second(c.DeploymentDelete(ctx, d.ID, "t")),
		"byname": second(c.DeploymentGetByName(ctx, "ml")),
		"random": second(c.DeploymentPause(ctx, uuid.New(), "t")),
	} {
		if domain.ErrorCode(err) != domain.CodeNotFound {
			t.Errorf("%s after delete: %v", name, err)
		}
	}
	again, created, err := c.DeploymentSave(ctx, deploymentSpec("ml", ""), "t")
	if err != nil || !created || again.ID == d.ID {
		t.Fatalf("the name is free after delete: %v %v %+v", err, created, again)
	}
}

func second[T any](_ T, err error) error { return err }

// Concurrent saves of one name make one deployment, and every change is a
// version of it: losers of a race decide again instead of failing.
func TestDeploymentConcurrentSaves(t *testing.T) {
	t.Parallel()
	c, store := deploymentSetup(t)
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	ids := make([]uuid.UUID, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			d, _, err := c.DeploymentSave(ctx, deploymentSpec("shared", string(rune('a'+i))), "t")
			ids[i], errs[i] = d.ID, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one name became several deployments: %v", ids)
		}
	}
	envs, err := store.ReadStream(ctx, store.Pool(), ids[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := domain.ValidateLog(store.Registry(), envs); err != nil {
		t.Fatal(err)
	}
	if len(envs) != writers {
		t.Fatalf("%d events for %d different saves", len(envs), writers)
	}
}
