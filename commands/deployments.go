package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
	"github.com/ordoflow/ordo/eventstore"
)

// DeploymentCommands is the write side of deployments: each method is one
// command in one transaction that loads the deployment's stream, decides in
// domain and appends with the stream's expected version. The name -> id
// lookup lives in the write-side table deployment_names, kept in the same
// transaction; deleting a deployment frees its name. A command that pauses
// or deletes a deployment, or changes its schedule or what its runs are made
// of, cancels in the same transaction the runs its schedule created ahead
// that have not started (see Schedules).
type DeploymentCommands struct {
	store *eventstore.Store
	saved DeploymentHook
}

// DeploymentHook runs in the transaction that saves (with a change) or
// deletes a deployment, with the deployment as it is then: the server
// keeps the automations of a deployment's notifications with it.
type DeploymentHook func(ctx context.Context, tx pgx.Tx, d domain.Deployment, actor string) error

// OnChange sets the hook DeploymentSave and DeploymentDelete run.
func (c *DeploymentCommands) OnChange(h DeploymentHook) { c.saved = h }

// NewDeploymentCommands returns the deployment commands on store.
func NewDeploymentCommands(store *eventstore.Store) *DeploymentCommands {
	return &DeploymentCommands{store: store}
}

// DeploymentSave creates the deployment named spec.Name or, when one by that
// name exists, records a new version of its spec (nothing when the spec is
// unchanged). created reports whether it was created.
func (c *DeploymentCommands) DeploymentSave(ctx context.Context, spec domain.DeploymentSpec, actor string) (d domain.Deployment, created bool, err error) {
	spec.ApplyDefaults()
	if err := spec.Validate(); err != nil {
		return domain.Deployment{}, false, err
	}
	err = retryTx(ctx, c.store, func(tx pgx.Tx) error {
		var id uuid.UUID
		err := tx.QueryRow(ctx, `SELECT deployment_id FROM deployment_names WHERE name = $1 FOR UPDATE`, spec.Name).Scan(&id)
		isNew := errors.Is(err, pgx.ErrNoRows)
		switch {
		case isNew:
			id = uuid.New()
		case err != nil:
			return fmt.Errorf("look up deployment %q: %w", spec.Name, err)
		}
		cur, err := c.deploymentLoad(ctx, tx, id)
		if err != nil {
			return err
		}
		events, err := domain.DecideDeployment(cur, domain.SaveDeployment{Spec: spec})
		if err != nil {
			return err
		}
		if isNew {
			if _, err := tx.Exec(ctx, `INSERT INTO deployment_names (name, deployment_id) VALUES ($1, $2)`, spec.Name, id); err != nil {
				return fmt.Errorf("claim deployment name %q: %w", spec.Name, err)
			}
		}
		d, err = c.deploymentAppend(ctx, tx, cur, events, actor, "saved")
		if err != nil || len(events) == 0 {
			return err
		}
		created = events[0].EventType() == (domain.DeploymentCreated{}).EventType()
		if err := c.changed(ctx, tx, d, actor); err != nil {
			return err
		}
		return cancelObsoleteScheduledRuns(ctx, tx, c.store, id, actor)
	})
	if err != nil {
		return domain.Deployment{}, false, err
	}
	return d, created, nil
}

// DeploymentPause turns the deployment's schedule off.
func (c *DeploymentCommands) DeploymentPause(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error) {
	return c.deploymentCommand(ctx, id, domain.PauseDeployment{}, actor, "paused")
}

// DeploymentResume turns the deployment's schedule back on.
func (c *DeploymentCommands) DeploymentResume(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error) {
	return c.deploymentCommand(ctx, id, domain.ResumeDeployment{}, actor, "resumed")
}

// DeploymentDelete removes the deployment and frees its name; its runs stay.
func (c *DeploymentCommands) DeploymentDelete(ctx context.Context, id uuid.UUID, actor string) (domain.Deployment, error) {
	return c.deploymentCommand(ctx, id, domain.DeleteDeployment{}, actor, "deleted")
}

// DeploymentGet returns the deployment folded from its stream; a deleted or
// unknown one is a not-found error.
func (c *DeploymentCommands) DeploymentGet(ctx context.Context, id uuid.UUID) (domain.Deployment, error) {
	d, err := c.deploymentLoad(ctx, c.store.Pool(), id)
	if err != nil {
		return domain.Deployment{}, err
	}
	if d.Stream == 0 || d.Deleted {
		return domain.Deployment{}, domain.Errorf(domain.CodeNotFound, "deployment %s not found", id)
	}
	return d, nil
}

// DeploymentGetByName returns the live deployment with this name.
func (c *DeploymentCommands) DeploymentGetByName(ctx context.Context, name string) (domain.Deployment, error) {
	var id uuid.UUID
	err := c.store.Pool().QueryRow(ctx, `SELECT deployment_id FROM deployment_names WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Deployment{}, domain.Errorf(domain.CodeNotFound, "deployment %q not found", name)
	}
	if err != nil {
		return domain.Deployment{}, fmt.Errorf("look up deployment %q: %w", name, err)
	}
	return c.DeploymentGet(ctx, id)
}

func (c *DeploymentCommands) deploymentCommand(ctx context.Context, id uuid.UUID, cmd domain.DeploymentCommand, actor, reason string) (domain.Deployment, error) {
	var d domain.Deployment
	err := retryTx(ctx, c.store, func(tx pgx.Tx) error {
		cur, err := c.deploymentLoad(ctx, tx, id)
		if err != nil {
			return err
		}
		events, err := domain.DecideDeployment(cur, cmd)
		if err != nil {
			return err
		}
		if _, deleting := cmd.(domain.DeleteDeployment); deleting {
			if _, err := tx.Exec(ctx, `DELETE FROM deployment_names WHERE deployment_id = $1`, id); err != nil {
				return fmt.Errorf("free deployment name: %w", err)
			}
		}
		d, err = c.deploymentAppend(ctx, tx, cur, events, actor, reason)
		if err != nil || len(events) == 0 {
			return err
		}
		if d.Deleted {
			if err := c.changed(ctx, tx, d, actor); err != nil {
				return err
			}
		}
		return cancelObsoleteScheduledRuns(ctx, tx, c.store, id, actor)
	})
	return d, err
}

// deploymentLoad folds a deployment's stream; a stream with no events gives
// a zero deployment with ID set.
func (c *DeploymentCommands) deploymentLoad(ctx context.Context, q eventstore.Querier, id uuid.UUID) (domain.Deployment, error) {
	d, _, err := loadDeployment(ctx, c.store, q, id)
	return d, err
}

// loadDeployment folds a deployment's stream and returns it with the
// events it was folded from; a stream with no events gives a zero
// deployment with ID set.
func loadDeployment(ctx context.Context, store *eventstore.Store, q eventstore.Querier, id uuid.UUID) (domain.Deployment, []domain.Envelope, error) {
	envs, err := store.ReadStream(ctx, q, id, 0)
	if err != nil {
		return domain.Deployment{}, nil, err
	}
	d := domain.Deployment{ID: id}
	for _, env := range envs {
		if env.StreamType != domain.StreamDeployment {
			return domain.Deployment{}, nil, domain.Errorf(domain.CodeNotFound, "deployment %s not found", id)
		}
		d = d.Apply(env.Event, env.RecordedAt)
		d.Stream = env.Version
	}
	return d, envs, nil
}

// deploymentAppend appends events at cur's stream version and returns the
// deployment with them applied.
func (c *DeploymentCommands) deploymentAppend(ctx context.Context, tx pgx.Tx, cur domain.Deployment, events []domain.Event, actor, reason string) (domain.Deployment, error) {
	if len(events) == 0 {
		return cur, nil
	}
	envs, err := c.store.Append(ctx, tx, eventstore.Append{
		StreamID:        cur.ID,
		ExpectedVersion: cur.Stream,
		Events:          events,
		Metadata:        domain.Metadata{Actor: actor, Reason: "deployment " + reason},
	})
	if err != nil {
		return domain.Deployment{}, err
	}
	for _, env := range envs {
		cur = cur.Apply(env.Event, env.RecordedAt)
		cur.Stream = env.Version
	}
	return cur, nil
}

// changed runs the hook, if any, for a deployment saved or deleted.
func (c *DeploymentCommands) changed(ctx context.Context, tx pgx.Tx, d domain.Deployment, actor string) error {
	if c.saved == nil {
		return nil
	}
	return c.saved(ctx, tx, d, actor)
}
