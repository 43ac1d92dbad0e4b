package client

// Terminal reports whether a run or task run in this state has ended: it
// changes no more unless it is retried.
func (s StateType) Terminal() bool {
	switch s {
	case StateTypeCOMPLETED, StateTypeFAILED, StateTypeCANCELLED, StateTypeCRASHED:
		return true
	}
	return false
}
