package apierr

import (
	"fmt"
	"strconv"
)

// Triton's texts for the errors clients match on, each with Triton's code.
// vigil's own explanation, when there is one, follows Triton's text after
// ": ", so that a client matching Triton's words still matches and a human
// still learns why. The texts are those of Triton's core
// (ModelRepositoryManager::GetModel and the version parsing of its front
// ends).

// UnknownModel is Triton's answer for a model the server does not know.
func UnknownModel(name string) *Error {
	return New(NotFound, "Request for unknown model: '%s' is not found", name)
}

// UnknownVersion is Triton's answer for a version of a known model that the
// server does not serve.
func UnknownVersion(name, version string) *Error {
	return New(NotFound, "Request for unknown model: '%s' version %s is not found", name, version)
}

// VersionNotReady is Triton's answer for a served version that is not
// ready; reason, when not empty, says why.
func VersionNotReady(name, version, reason string) *Error {
	return &Error{Code: Unavailable, Msg: withReason(fmt.Sprintf("Request for unknown model: '%s' version %s is not at ready state", name, version), reason)}
}

// NoAvailableVersions is Triton's text for a model with no ready version
// to serve the latest-version request. Triton answers it NOT_FOUND; vigil
// answers Unavailable (503 with Retry-After) because the model is in the
// repository and its readiness says when it will serve.
func NoAvailableVersions(name, reason string) *Error {
	return &Error{Code: Unavailable, Msg: withReason(fmt.Sprintf("Request for unknown model: '%s' has no available versions", name), reason)}
}

// BadVersionString is Triton's answer for a version that is not an
// integer.
func BadVersionString(version string) *Error {
	return New(InvalidArgument, "failed to get model version from specified version string '%s': a version is a positive integer", version)
}

// CheckVersionString returns BadVersionString unless version is empty (the
// server's choice) or a positive integer.
func CheckVersionString(version string) error {
	if version == "" {
		return nil
	}
	if n, err := strconv.ParseInt(version, 10, 64); err != nil || n < 1 {
		return BadVersionString(version)
	}
	return nil
}

// LoadFailed is Triton's form for a failed model load, "failed to load
// '<m>'", followed by the cause.
func LoadFailed(code Code, err error, name string) *Error {
	return Wrap(code, err, "failed to load '%s'", name)
}

func withReason(msg, reason string) string {
	if reason == "" {
		return msg
	}
	return msg + ": " + reason
}
