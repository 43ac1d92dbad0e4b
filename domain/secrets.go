package domain

import (
	"net/url"
	"strings"
)

// Secrets and task environments.
//
// A task's env values are part of its spec: they are stored in the
// deployment's and the run's events, returned by the API and shown in the
// UI. Secrets must therefore never be given as env values. The safe path is
// inherit_env: the task names the variables it needs, the worker passes
// them from its own environment, and their values are never stored, logged
// or returned. Validation refuses the two common ways a secret slips into a
// spec: an env variable whose name says it holds one, and a URL with a
// password in it.

// secretNameParts are the words that make an environment variable name
// look secret, matched case-insensitively anywhere in the name.
var secretNameParts = []string{"PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY"}

// SecretEnvName reports whether an environment variable's name says that
// it holds a secret: it contains PASSWORD, PASSWD, SECRET, TOKEN or KEY, in
// any case.
func SecretEnvName(name string) bool {
	upper := strings.ToUpper(name)
	for _, part := range secretNameParts {
		if strings.Contains(upper, part) {
			return true
		}
	}
	return false
}

// urlWithPassword reports whether s holds a URL with a password in its
// user info (postgres://user:secret@host/db).
func urlWithPassword(s string) bool {
	for rest := s; ; {
		i := strings.Index(rest, "://")
		if i < 0 {
			return false
		}
		// the scheme runs back from "://" over letters, digits, + - .
		start := i
		for start > 0 && isSchemeByte(rest[start-1]) {
			start--
		}
		end := i + 3
		for end < len(rest) && !strings.ContainsRune(" \t\r\n\"'`", rune(rest[end])) {
			end++
		}
		if start < i {
			if u, err := url.Parse(rest[start:end]); err == nil && u.User != nil {
				if p, set := u.User.Password(); set && p != "" {
					return true
				}
			}
		}
		rest = rest[i+3:]
	}
}

func isSchemeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

// checkSecretEnv refuses an env value that would store a secret in clear:
// a secret-looking name, or a URL with a password.
func checkSecretEnv(p *Problems, field, name, value string) {
	switch {
	case SecretEnvName(name):
		p.Add(field, "%q looks like a secret, and env values are stored in events and shown by the API and UI: "+
			"list it in inherit_env instead, so that the worker passes it from its own environment and it is never stored", name)
	case urlWithPassword(value):
		p.Add(field, "the value holds a URL with a password, and env values are stored in events and shown by the API and UI: "+
			"put the URL in a variable of the worker's environment and list its name in inherit_env")
	}
}
