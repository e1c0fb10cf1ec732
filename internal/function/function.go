// Package function owns the Lambda function model: the configuration of
// $LATEST and of published versions, aliases with weighted routing, and the
// per-function settings AWS keeps beside them (reserved and provisioned
// concurrency, event-invoke configs, tags, the resource policy, URL configs).
//
// Types here are both the stored form and the wire form: their JSON field
// names and types are exactly AWS's (FunctionConfiguration, AliasConfiguration,
// ...), so the API layer encodes them as they are. Validation follows AWS's
// limits and messages (LAMBDA-WIRE.md §5) and returns errdefs errors.
//
// Invariants:
//   - a published version is an immutable snapshot of $LATEST's code and
//     configuration; versions are numbered 1, 2, ... per function and never reused
//     while the function exists;
//   - every write gives the written resource a new RevisionId;
//   - State moves Pending → Active (or Failed) once after create;
//     LastUpdateStatus moves InProgress → Successful (or Failed) after every
//     update of code or configuration. Writes are refused while either is in
//     its transient state.
package function

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Latest is the qualifier of the unpublished, mutable version.
const Latest = "$LATEST"

// States and update statuses as AWS reports them.
const (
	StatePending  = "Pending"
	StateActive   = "Active"
	StateFailed   = "Failed"
	StateInactive = "Inactive"

	UpdateInProgress = "InProgress"
	UpdateSuccessful = "Successful"
	UpdateFailed     = "Failed"
)

// Config is AWS's FunctionConfiguration.
type Config struct {
	FunctionName               string                `json:"FunctionName"`
	FunctionArn                string                `json:"FunctionArn"`
	Runtime                    string                `json:"Runtime,omitempty"`
	Role                       string                `json:"Role"`
	Handler                    string                `json:"Handler,omitempty"`
	CodeSize                   int64                 `json:"CodeSize"`
	Description                string                `json:"Description"`
	Timeout                    int                   `json:"Timeout"`
	MemorySize                 int                   `json:"MemorySize"`
	LastModified               string                `json:"LastModified"`
	CodeSha256                 string                `json:"CodeSha256"`
	Version                    string                `json:"Version"`
	Environment                *Environment          `json:"Environment,omitempty"`
	TracingConfig              *TracingConfig        `json:"TracingConfig,omitempty"`
	DeadLetterConfig           *DeadLetterConfig     `json:"DeadLetterConfig,omitempty"`
	KMSKeyArn                  string                `json:"KMSKeyArn,omitempty"`
	RevisionId                 string                `json:"RevisionId"`
	Layers                     []LayerRef            `json:"Layers,omitempty"`
	State                      string                `json:"State"`
	StateReason                string                `json:"StateReason,omitempty"`
	StateReasonCode            string                `json:"StateReasonCode,omitempty"`
	LastUpdateStatus           string                `json:"LastUpdateStatus"`
	LastUpdateStatusReason     string                `json:"LastUpdateStatusReason,omitempty"`
	LastUpdateStatusReasonCode string                `json:"LastUpdateStatusReasonCode,omitempty"`
	PackageType                string                `json:"PackageType"`
	Architectures              []string              `json:"Architectures"`
	EphemeralStorage           EphemeralStorage      `json:"EphemeralStorage"`
	SnapStart                  SnapStartResponse     `json:"SnapStart"`
	LoggingConfig              LoggingConfig         `json:"LoggingConfig"`
	RuntimeVersionConfig       *RuntimeVersionConfig `json:"RuntimeVersionConfig,omitempty"`
	// NuboNetwork is nubo's own setting: "none" gives the function no network
	// at all; empty means the default egress-only network. AWS SDKs ignore
	// unknown fields, so it travels in the same document.
	NuboNetwork string `json:"NuboNetwork,omitempty"`
}

// Environment is the function's own variables.
type Environment struct {
	Variables map[string]string `json:"Variables"`
}

// TracingConfig is X-Ray's mode, stored and echoed only.
type TracingConfig struct {
	Mode string `json:"Mode"`
}

// DeadLetterConfig names where failed async events go.
type DeadLetterConfig struct {
	TargetArn string `json:"TargetArn,omitempty"`
}

// LayerRef is a layer version attached to a function.
type LayerRef struct {
	Arn      string `json:"Arn"`
	CodeSize int64  `json:"CodeSize"`
}

// EphemeralStorage is the /tmp size in MB.
type EphemeralStorage struct {
	Size int `json:"Size"`
}

// SnapStartResponse is echoed as AWS reports it for functions without SnapStart.
type SnapStartResponse struct {
	ApplyOn            string `json:"ApplyOn"`
	OptimizationStatus string `json:"OptimizationStatus"`
}

// LoggingConfig is the function's log settings.
type LoggingConfig struct {
	LogFormat           string `json:"LogFormat,omitempty"`
	ApplicationLogLevel string `json:"ApplicationLogLevel,omitempty"`
	SystemLogLevel      string `json:"SystemLogLevel,omitempty"`
	LogGroup            string `json:"LogGroup,omitempty"`
}

// RuntimeVersionConfig reports the runtime version in use.
type RuntimeVersionConfig struct {
	RuntimeVersionArn string `json:"RuntimeVersionArn,omitempty"`
}

// Alias is AWS's AliasConfiguration.
type Alias struct {
	AliasArn        string         `json:"AliasArn"`
	Name            string         `json:"Name"`
	FunctionVersion string         `json:"FunctionVersion"`
	Description     string         `json:"Description"`
	RoutingConfig   *RoutingConfig `json:"RoutingConfig,omitempty"`
	RevisionId      string         `json:"RevisionId"`
}

// RoutingConfig sends a share of an alias's traffic to a second version.
type RoutingConfig struct {
	AdditionalVersionWeights map[string]float64 `json:"AdditionalVersionWeights,omitempty"`
}

// TimeFormat is AWS's LastModified layout: milliseconds and a +0000 offset.
const TimeFormat = "2006-01-02T15:04:05.000-0700"

// FormatTime renders t as AWS renders LastModified.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Digest is a hash of everything a published version freezes (code and
// configuration, but not bookkeeping such as RevisionId or LastModified). Two
// configs with the same digest publish as the same version.
func (c *Config) Digest() string {
	d := struct {
		Runtime, Role, Handler, Description, CodeSha256, KMSKeyArn, PackageType, NuboNetwork string
		Timeout, MemorySize, Ephemeral                                                       int
		Env                                                                                  *Environment
		Tracing                                                                              *TracingConfig
		DLQ                                                                                  *DeadLetterConfig
		Layers                                                                               []LayerRef
		Arch                                                                                 []string
		Logging                                                                              LoggingConfig
	}{c.Runtime, c.Role, c.Handler, c.Description, c.CodeSha256, c.KMSKeyArn, c.PackageType, c.NuboNetwork,
		c.Timeout, c.MemorySize, c.EphemeralStorage.Size, c.Environment, c.TracingConfig, c.DeadLetterConfig,
		c.Layers, c.Architectures, c.LoggingConfig}
	b, _ := json.Marshal(d) // maps marshal with sorted keys, so the digest is stable
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	if c.Environment != nil {
		n.Environment = &Environment{Variables: make(map[string]string, len(c.Environment.Variables))}
		for k, v := range c.Environment.Variables {
			n.Environment.Variables[k] = v
		}
	}
	if c.TracingConfig != nil {
		t := *c.TracingConfig
		n.TracingConfig = &t
	}
	if c.DeadLetterConfig != nil {
		d := *c.DeadLetterConfig
		n.DeadLetterConfig = &d
	}
	if c.RuntimeVersionConfig != nil {
		r := *c.RuntimeVersionConfig
		n.RuntimeVersionConfig = &r
	}
	n.Layers = append([]LayerRef(nil), c.Layers...)
	n.Architectures = append([]string(nil), c.Architectures...)
	return &n
}
