package function

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// Limits from LAMBDA-WIRE.md §5.
const (
	MinMemory          = 128
	MaxMemory          = 10240
	MinTimeout         = 1
	MaxTimeout         = 900
	DefaultTimeout     = 3
	DefaultMemory      = 128
	MinEphemeral       = 512
	MaxEphemeral       = 10240
	MaxEnvBytes        = 4096
	MaxLayers          = 5
	MaxZippedBytes     = 52428800
	MaxUnzippedBytes   = 262144000
	MaxRequestBytes    = 70167211
	MaxDescription     = 256
	DefaultArch        = "x86_64"
	PackageZip         = "Zip"
	PackageImage       = "Image"
	MaxVersionsPerList = 50
)

// reservedEnv are the keys Lambda sets itself and refuses from users
// (AWS's documented reserved set; LAMBDA-WIRE.md §1).
var reservedEnv = map[string]bool{
	"_HANDLER": true, "_X_AMZN_TRACE_ID": true, "AWS_DEFAULT_REGION": true, "AWS_REGION": true,
	"AWS_EXECUTION_ENV": true, "AWS_LAMBDA_FUNCTION_NAME": true, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": true,
	"AWS_LAMBDA_FUNCTION_VERSION": true, "AWS_LAMBDA_INITIALIZATION_TYPE": true,
	"AWS_LAMBDA_LOG_GROUP_NAME": true, "AWS_LAMBDA_LOG_STREAM_NAME": true, "AWS_ACCESS_KEY": true,
	"AWS_ACCESS_KEY_ID": true, "AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true,
	"AWS_LAMBDA_RUNTIME_API": true, "LAMBDA_TASK_ROOT": true, "LAMBDA_RUNTIME_DIR": true,
}

// Runtimes is AWS's Runtime enum (the model's value set). An identifier
// outside it is a ValidationException; one inside it that AWS no longer
// accepts for new or updated functions (see supported) is refused with
// InvalidParameterValueException. Which runtimes a host can actually run is
// package runtimes' business: a supported one the host lacks fails at
// invoke time.
var Runtimes = []string{
	"nodejs", "nodejs4.3", "nodejs6.10", "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x",
	"nodejs16.x", "nodejs18.x", "nodejs20.x", "nodejs22.x", "nodejs24.x", "nodejs26.x",
	"java8", "java8.al2", "java11", "java17", "java21", "java25", "java8.al2023", "java11.al2023", "java17.al2023",
	"python2.7", "python3.6", "python3.7", "python3.8", "python3.9", "python3.10", "python3.11",
	"python3.12", "python3.13", "python3.14", "python3.15",
	"dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet6", "dotnet8", "dotnet10",
	"nodejs4.3-edge", "go1.x", "ruby2.5", "ruby2.7", "ruby3.2", "ruby3.3", "ruby3.4", "ruby4.0",
	"provided", "provided.al2", "provided.al2023",
}

// supported are the identifiers AWS still accepts for creating or updating
// a function.
var supported = map[string]bool{
	"nodejs18.x": true, "nodejs20.x": true, "nodejs22.x": true, "nodejs24.x": true, "nodejs26.x": true,
	"python3.9": true, "python3.10": true, "python3.11": true, "python3.12": true,
	"python3.13": true, "python3.14": true, "python3.15": true,
	"java8.al2": true, "java11": true, "java17": true, "java21": true, "java25": true,
	"java8.al2023": true, "java11.al2023": true, "java17.al2023": true,
	"dotnet8": true, "dotnet10": true,
	"ruby3.2": true, "ruby3.3": true, "ruby3.4": true, "ruby4.0": true,
	"provided": true, "provided.al2": true, "provided.al2023": true,
}

var runtimeSet = func() map[string]bool {
	m := map[string]bool{}
	for _, r := range Runtimes {
		m[r] = true
	}
	return m
}()

// KnownRuntime reports whether id is in AWS's Runtime enum.
func KnownRuntime(id string) bool { return runtimeSet[id] }

// SupportedRuntime reports whether AWS accepts id for new or updated functions.
func SupportedRuntime(id string) bool { return supported[id] }

// violations collects model-constraint failures into one ValidationException,
// worded as AWS words it ("2 validation errors detected: ...; ...").
type violations []string

func (v *violations) add(value any, field, constraint string) {
	*v = append(*v, fmt.Sprintf("Value '%v' at '%s' failed to satisfy constraint: %s", value, field, constraint))
}

func (v violations) err() error {
	switch len(v) {
	case 0:
		return nil
	case 1:
		return errdefs.Validation("1 validation error detected: %s", v[0])
	}
	return errdefs.Validation("%d validation errors detected: %s", len(v), strings.Join(v, "; "))
}

func checkRange(v *violations, val *int, field string, lo, hi int) {
	if val == nil {
		return
	}
	if *val < lo {
		v.add(*val, field, fmt.Sprintf("Member must have value greater than or equal to %d", lo))
	} else if *val > hi {
		v.add(*val, field, fmt.Sprintf("Member must have value less than or equal to %d", hi))
	}
}

// rolePattern mirrors AWS's RoleArn pattern
// arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+ without regexp.
func validRole(s string) bool {
	rest, ok := strings.CutPrefix(s, "arn:")
	if !ok {
		return false
	}
	part, rest, ok := strings.Cut(rest, ":")
	if !ok || (part != "" && !strings.HasPrefix(part, "aws")) {
		return false
	}
	for _, c := range part {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	rest, ok = strings.CutPrefix(rest, "iam::")
	if !ok || len(rest) < 13 {
		return false
	}
	for _, c := range rest[:12] {
		if c < '0' || c > '9' {
			return false
		}
	}
	rest, ok = strings.CutPrefix(rest[12:], ":role")
	if !ok {
		return false
	}
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" || len(s) > 2048 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_+=,.@-/", c)) {
			return false
		}
	}
	return true
}

func validEnvKey(k string) bool {
	if len(k) < 2 {
		return false
	}
	for i, c := range k {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && c != '_' && !(c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// checkEnvironment applies AWS's rules to function environment variables:
// key shape, reserved keys, and 4 KB measured over the JSON of the map.
func checkEnvironment(env *Environment) error {
	if env == nil || len(env.Variables) == 0 {
		return nil
	}
	var reserved, bad []string
	for k := range env.Variables {
		if reservedEnv[k] {
			reserved = append(reserved, k)
		} else if !validEnvKey(k) {
			bad = append(bad, k)
		}
	}
	sort.Strings(reserved)
	sort.Strings(bad)
	if len(bad) > 0 {
		return errdefs.Validation("1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]")
	}
	if len(reserved) > 0 {
		return errdefs.InvalidParameter("Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: %s", strings.Join(reserved, ","))
	}
	b, _ := json.Marshal(env.Variables)
	if len(b) > MaxEnvBytes {
		return errdefs.InvalidParameter("Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: %s", b)
	}
	return nil
}
