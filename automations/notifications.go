package automations

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ordoflow/ordo/domain"
)

// DeploymentChanged keeps the automations of a deployment's notifications
// as its spec says, within tx, the transaction that changed the deployment
// (commands.DeploymentHook): one automation per notification, named
// domain.NotificationPrefix(name)+"i]", created or changed; those beyond
// the list, or all of them once the deployment is deleted, deleted.
func (s *Service) DeploymentChanged(ctx context.Context, tx pgx.Tx, d domain.Deployment, actor string) error {
	var want []domain.AutomationSpec
	if !d.Deleted {
		want = d.Spec.NotificationAutomations()
	}
	for i, spec := range want {
		if err := s.checkTargets(spec); err != nil {
			return notificationError(i, spec, err)
		}
	}
	prefix := domain.NotificationPrefix(d.Spec.Name)
	rows, err := tx.Query(ctx, `SELECT name, id FROM automations WHERE NOT deleted AND left(name, length($1)) = $1`, prefix)
	if err != nil {
		return fmt.Errorf("list notification automations: %w", err)
	}
	have := map[string]uuid.UUID{}
	for rows.Next() {
		var name string
		var id uuid.UUID
		if err := rows.Scan(&name, &id); err != nil {
			rows.Close()
			return fmt.Errorf("list notification automations: %w", err)
		}
		have[name] = id
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list notification automations: %w", err)
	}
	reason := "deployment " + d.Spec.Name + " saved"
	for i, spec := range want {
		id, ok := have[spec.Name]
		delete(have, spec.Name)
		if !ok {
			id = uuid.New()
		}
		if _, err := s.commandTx(ctx, tx, id, domain.SaveAutomation{Spec: spec}, actor, reason, !ok); err != nil {
			return notificationError(i, spec, err)
		}
	}
	for _, id := range have {
		if _, err := s.commandTx(ctx, tx, id, domain.DeleteAutomation{}, actor, "deployment "+d.Spec.Name+" no longer has it", false); err != nil {
			return err
		}
	}
	return nil
}

// notificationError names the notification a refused automation came
// from: "notifications[i].slack" for what was "actions[0].url".
func notificationError(i int, spec domain.AutomationSpec, err error) error {
	var e *domain.Error
	if !errors.As(err, &e) {
		return err
	}
	key := map[string]string{domain.ActionSlack: "slack", domain.ActionWebhook: "webhook", domain.ActionEmail: "email"}[spec.Actions[0].Type]
	out := &domain.Error{Code: e.Code, Message: e.Message}
	for _, det := range e.Details {
		field := "notifications[" + strconv.Itoa(i) + "]"
		if det.Field == "actions[0].secret_env" {
			field += ".secret_env"
		} else if strings.HasPrefix(det.Field, "actions[0]") {
			field += "." + key
		}
		out.Details = append(out.Details, domain.Detail{Field: field, Message: det.Message})
	}
	return out
}
