package notify_test

import (
	"fmt"

	"github.com/ordoflow/ordo/notify"
)

func ExampleParse() {
	tpl, err := notify.Parse(notify.KindSubject, "{{.FlowRun.DeploymentName}} {{.FlowRun.State.Type}} after attempt {{.TaskRun.Attempt}}")
	if err != nil {
		fmt.Println(err)
		return
	}
	subject, _ := tpl.Execute(notify.Sample())
	fmt.Println(subject)

	_, err = notify.Parse(notify.KindSubject, "{{.FlowRun.Nmae}} failed")
	fmt.Println(err)
	// Output:
	// model_training_validation FAILED after attempt 3
	// template: subject:1:10: executing "subject" at <.FlowRun.Nmae>: can't evaluate field Nmae in type notify.FlowRun
}
