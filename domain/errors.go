package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Code classifies an error for callers: the HTTP API maps each code to one
// status, the CLI prints it.
type Code string

const (
	CodeInvalid      Code = "invalid"      // the input is wrong; details name the fields
	CodeNotFound     Code = "not_found"    // the thing named does not exist
	CodeConflict     Code = "conflict"     // the state changed under the caller, or the command does not fit the current state
	CodeUnauthorized Code = "unauthorized" // no or unknown credentials
	CodeForbidden    Code = "forbidden"    // credentials without the needed scope
	CodeTooLarge     Code = "too_large"    // a body, result or log above its limit
	CodeUnavailable  Code = "unavailable"  // a dependency (the database) cannot be reached now
	CodeInternal     Code = "internal"     // a bug or an unexpected failure
)

// Detail names one problem with one field of an input.
type Detail struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is the one error type that crosses Ordo's package boundaries.
type Error struct {
	Code    Code
	Message string
	Details []Detail
}

func (e *Error) Error() string {
	if len(e.Details) == 0 {
		return e.Message
	}
	parts := make([]string, len(e.Details))
	for i, d := range e.Details {
		parts[i] = d.Field + ": " + d.Message
	}
	if e.Message == "" {
		return strings.Join(parts, "; ")
	}
	return e.Message + ": " + strings.Join(parts, "; ")
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an invalid-input error about one field.
func Invalid(field, format string, args ...any) *Error {
	// The message is the detail's: Error writes it "field: message".
	return &Error{Code: CodeInvalid, Details: []Detail{{Field: field, Message: fmt.Sprintf(format, args...)}}}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal when there is none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Problems collects field problems while validating; Err returns nil when
// there are none.
type Problems struct {
	Message string
	Details []Detail
}

// Add records a problem with field.
func (p *Problems) Add(field, format string, args ...any) {
	p.Details = append(p.Details, Detail{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Err returns the collected problems as one invalid error, or nil.
func (p *Problems) Err() error {
	if len(p.Details) == 0 {
		return nil
	}
	msg := p.Message
	if msg == "" {
		msg = "invalid input"
	}
	return &Error{Code: CodeInvalid, Message: msg, Details: p.Details}
}
