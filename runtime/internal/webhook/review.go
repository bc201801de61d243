package webhook

import (
	"encoding/json"
	"net/http"
)

// The admission.k8s.io/v1 envelope (only the fields the injector uses), declared here once:
// the server decodes a Review, hands its Request to the Mutator and turns the Decision into
// the Review it sends back.

// Wire strings of AdmissionReview v1.
const (
	ReviewAPIVersion = "admission.k8s.io/v1"
	ReviewKind       = "AdmissionReview"
	PatchTypeJSON    = "JSONPatch"
	OperationCreate  = "CREATE"
)

// Denial reasons: status.reason of a denial and the label of denials_total (docs/injector.md
// lists them for operators). The mutator (runtime/internal/inject) picks one for every
// refusal; the server itself answers internal (a mutator that panicked) and bad-request (a
// request it cannot read).
const (
	ReasonBadAnnotations    = "bad-annotations"
	ReasonAddressNotAllowed = "address-not-allowed"
	ReasonImageUnresolvable = "image-unresolvable"
	ReasonEnvConflict       = "env-conflict"
	ReasonVaultSteering     = "vault-steering"
	ReasonDangerousEnv      = "dangerous-env"
	ReasonBadRequest        = "bad-request"
	ReasonInternal          = "internal"
	// a pod pinned to Windows: the wrapper is a Linux binary
	ReasonUnsupportedOS = "unsupported-os"
)

// DenialReasons lists every denial reason; any other reason is counted as internal, so the
// metric's label set stays bounded.
var DenialReasons = []string{
	ReasonBadAnnotations, ReasonAddressNotAllowed, ReasonImageUnresolvable, ReasonEnvConflict,
	ReasonVaultSteering, ReasonDangerousEnv, ReasonBadRequest, ReasonInternal, ReasonUnsupportedOS,
}

// Review is the envelope of a request and of its answer. Request stays raw until the server
// has checked the envelope: a request it cannot read as a Request is still answered, with
// its uid, as bad-request.
type Review struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Request    json.RawMessage `json:"request,omitempty"`
	Response   *Response       `json:"response,omitempty"`
}

// GroupVersionKind names the kind of a request's object.
type GroupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// GroupVersionResource names the resource of a request.
type GroupVersionResource struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
}

// Request is the part of an admission request the mutator uses.
type Request struct {
	UID         string               `json:"uid"`
	Kind        GroupVersionKind     `json:"kind"`
	Resource    GroupVersionResource `json:"resource"`
	SubResource string               `json:"subResource,omitempty"`
	Name        string               `json:"name,omitempty"`
	Namespace   string               `json:"namespace,omitempty"`
	Operation   string               `json:"operation"`
	Object      json.RawMessage      `json:"object,omitempty"`
	DryRun      *bool                `json:"dryRun,omitempty"`
}

// Response is the answer: allowed with an optional JSON patch, or refused with a Status.
type Response struct {
	UID       string   `json:"uid"`
	Allowed   bool     `json:"allowed"`
	PatchType string   `json:"patchType,omitempty"`
	Patch     []byte   `json:"patch,omitempty"` // JSON encodes it as base64, as the API wants
	Status    *Status  `json:"status,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// Status is the metav1.Status of a refusal.
type Status struct {
	Code    int32  `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Decision is a Mutator's answer to one admission request: allow (with a patch or none) or
// deny (with a reason and a message).
type Decision struct {
	Allowed  bool
	Patch    []byte // a JSON patch (RFC 6902), nil or empty for none
	Code     int32  // status.code of a denial (403 when 0)
	Reason   string // status.reason of a denial (one of DenialReasons)
	Message  string // status.message of a denial: "cloudtaser: <why>. <what to do>"
	Warnings []string
}

// Allow lets the object through with patch (nil: unchanged).
func Allow(patch []byte) Decision { return Decision{Allowed: true, Patch: patch} }

// Deny refuses the object with HTTP status 403: reason is one of DenialReasons, message
// "cloudtaser: <why>. <what to do>".
func Deny(reason, message string) Decision {
	return Decision{Code: http.StatusForbidden, Reason: reason, Message: message}
}

// Result labels a decision for requests_total: ResultMutated, ResultUnchanged or ResultDenied.
func (d Decision) Result() string {
	switch {
	case !d.Allowed:
		return ResultDenied
	case len(d.Patch) > 0:
		return ResultMutated
	}
	return ResultUnchanged
}

// Response is the envelope's answer to the request with uid.
func (d Decision) Response(uid string) *Response {
	r := &Response{UID: uid, Allowed: d.Allowed, Warnings: d.Warnings}
	switch {
	case !d.Allowed:
		code := d.Code
		if code == 0 {
			code = http.StatusForbidden
		}
		r.Status = &Status{Code: code, Reason: d.Reason, Message: d.Message}
	case len(d.Patch) > 0:
		r.PatchType, r.Patch = PatchTypeJSON, d.Patch
	}
	return r
}
