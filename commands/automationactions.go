package commands

import (
	"context"

	"github.com/google/uuid"

	"github.com/ordoflow/ordo/domain"
)

// AutomationActions are the commands automations' Ordo actions run
// (automations.OrdoActions, wired in cmd/ordo). A delivery may run one
// again after it acted, so each is idempotent.
type AutomationActions struct {
	svc         *Service
	runs        *DeploymentRuns
	deployments *DeploymentCommands
}

// NewAutomationActions returns the actions on svc and deployments.
func NewAutomationActions(svc *Service, deployments *DeploymentCommands) *AutomationActions {
	return &AutomationActions{svc: svc, runs: NewDeploymentRuns(svc), deployments: deployments}
}

// RunCancel cancels the flow run. A run being cancelled is left as it is
// (domain decides no event), and one that has ended has nothing to cancel.
func (a *AutomationActions) RunCancel(ctx context.Context, runID uuid.UUID, actor string) error {
	_, err := a.svc.RunCancel(ctx, runID, actor)
	if domain.ErrorCode(err) == domain.CodeConflict {
		return nil // it has ended
	}
	return err
}

// DeploymentPause pauses the named deployment; a paused one stays as it is.
func (a *AutomationActions) DeploymentPause(ctx context.Context, name, actor string) error {
	d, err := a.deployments.DeploymentGetByName(ctx, name)
	if err != nil {
		return err
	}
	_, err = a.deployments.DeploymentPause(ctx, d.ID, actor)
	return err
}

// RunStart starts a run of the named deployment, once per key and actor.
func (a *AutomationActions) RunStart(ctx context.Context, deployment string, parameters map[string]any, key, actor string) (uuid.UUID, error) {
	d, err := a.deployments.DeploymentGetByName(ctx, deployment)
	if err != nil {
		return uuid.Nil, err
	}
	run, err := a.runs.RunFromDeployment(ctx, d.ID, RunRequest{Parameters: parameters, IdempotencyKey: key}, actor)
	return run.ID, err
}
