package function

import (
	"strings"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// Code is AWS's FunctionCode / LayerVersionContentInput. ZipFile arrives as a
// base64 string in JSON; encoding/json decodes it into bytes.
type Code struct {
	ZipFile         []byte `json:"ZipFile,omitempty"`
	S3Bucket        string `json:"S3Bucket,omitempty"`
	S3Key           string `json:"S3Key,omitempty"`
	S3ObjectVersion string `json:"S3ObjectVersion,omitempty"`
	ImageUri        string `json:"ImageUri,omitempty"`
}

// CreateInput is CreateFunction's request body.
type CreateInput struct {
	FunctionName     string            `json:"FunctionName"`
	Runtime          string            `json:"Runtime"`
	Role             string            `json:"Role"`
	Handler          string            `json:"Handler"`
	Code             *Code             `json:"Code"`
	Description      *string           `json:"Description"`
	Timeout          *int              `json:"Timeout"`
	MemorySize       *int              `json:"MemorySize"`
	Publish          bool              `json:"Publish"`
	PackageType      string            `json:"PackageType"`
	DeadLetterConfig *DeadLetterConfig `json:"DeadLetterConfig"`
	Environment      *Environment      `json:"Environment"`
	KMSKeyArn        string            `json:"KMSKeyArn"`
	TracingConfig    *TracingConfig    `json:"TracingConfig"`
	Tags             map[string]string `json:"Tags"`
	Layers           []string          `json:"Layers"`
	Architectures    []string          `json:"Architectures"`
	EphemeralStorage *EphemeralStorage `json:"EphemeralStorage"`
	LoggingConfig    *LoggingConfig    `json:"LoggingConfig"`
	NuboNetwork      *string           `json:"NuboNetwork"`
}

// UpdateConfigInput is UpdateFunctionConfiguration's request body; nil means
// "leave as it is".
type UpdateConfigInput struct {
	Role             *string           `json:"Role"`
	Handler          *string           `json:"Handler"`
	Description      *string           `json:"Description"`
	Timeout          *int              `json:"Timeout"`
	MemorySize       *int              `json:"MemorySize"`
	Environment      *Environment      `json:"Environment"`
	Runtime          *string           `json:"Runtime"`
	DeadLetterConfig *DeadLetterConfig `json:"DeadLetterConfig"`
	KMSKeyArn        *string           `json:"KMSKeyArn"`
	TracingConfig    *TracingConfig    `json:"TracingConfig"`
	RevisionId       string            `json:"RevisionId"`
	Layers           *[]string         `json:"Layers"`
	EphemeralStorage *EphemeralStorage `json:"EphemeralStorage"`
	LoggingConfig    *LoggingConfig    `json:"LoggingConfig"`
	NuboNetwork      *string           `json:"NuboNetwork"`
}

// UpdateCodeInput is UpdateFunctionCode's request body.
type UpdateCodeInput struct {
	ZipFile         []byte   `json:"ZipFile"`
	S3Bucket        string   `json:"S3Bucket"`
	S3Key           string   `json:"S3Key"`
	S3ObjectVersion string   `json:"S3ObjectVersion"`
	ImageUri        string   `json:"ImageUri"`
	Publish         bool     `json:"Publish"`
	DryRun          bool     `json:"DryRun"`
	RevisionId      string   `json:"RevisionId"`
	Architectures   []string `json:"Architectures"`
}

// NewConfig builds $LATEST's configuration from a create request, with AWS's
// defaults. Code fields (CodeSha256, CodeSize) and ARNs are filled by the caller.
func NewConfig(in *CreateInput) *Config {
	c := &Config{
		FunctionName:     in.FunctionName,
		Runtime:          in.Runtime,
		Role:             in.Role,
		Handler:          in.Handler,
		Timeout:          DefaultTimeout,
		MemorySize:       DefaultMemory,
		Version:          Latest,
		Environment:      in.Environment,
		TracingConfig:    &TracingConfig{Mode: "PassThrough"},
		DeadLetterConfig: in.DeadLetterConfig,
		KMSKeyArn:        in.KMSKeyArn,
		PackageType:      in.PackageType,
		Architectures:    in.Architectures,
		EphemeralStorage: EphemeralStorage{Size: MinEphemeral},
		SnapStart:        SnapStartResponse{ApplyOn: "None", OptimizationStatus: "Off"},
		LoggingConfig:    LoggingConfig{LogFormat: "Text", LogGroup: "/aws/lambda/" + in.FunctionName},
	}
	if in.Description != nil {
		c.Description = *in.Description
	}
	if in.Timeout != nil {
		c.Timeout = *in.Timeout
	}
	if in.MemorySize != nil {
		c.MemorySize = *in.MemorySize
	}
	if in.TracingConfig != nil && in.TracingConfig.Mode != "" {
		c.TracingConfig = in.TracingConfig
	}
	if in.EphemeralStorage != nil {
		c.EphemeralStorage = *in.EphemeralStorage
	}
	if in.LoggingConfig != nil {
		mergeLogging(&c.LoggingConfig, in.LoggingConfig)
	}
	if in.NuboNetwork != nil {
		c.NuboNetwork = *in.NuboNetwork
	}
	if c.PackageType == "" {
		c.PackageType = PackageZip
	}
	if len(c.Architectures) == 0 {
		c.Architectures = []string{DefaultArch}
	}
	if c.Environment != nil && c.Environment.Variables == nil {
		c.Environment.Variables = map[string]string{}
	}
	return c
}

func mergeLogging(dst, src *LoggingConfig) {
	if src.LogFormat != "" {
		dst.LogFormat = src.LogFormat
	}
	if src.LogGroup != "" {
		dst.LogGroup = src.LogGroup
	}
	if src.ApplicationLogLevel != "" {
		dst.ApplicationLogLevel = src.ApplicationLogLevel
	}
	if src.SystemLogLevel != "" {
		dst.SystemLogLevel = src.SystemLogLevel
	}
}

// Apply returns a copy of c with the update's fields set. Layers are applied
// by the caller, which must resolve their ARNs.
func (in *UpdateConfigInput) Apply(c *Config) *Config {
	n := c.Clone()
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&n.Role, in.Role)
	set(&n.Handler, in.Handler)
	set(&n.Description, in.Description)
	set(&n.Runtime, in.Runtime)
	set(&n.KMSKeyArn, in.KMSKeyArn)
	set(&n.NuboNetwork, in.NuboNetwork)
	if in.Timeout != nil {
		n.Timeout = *in.Timeout
	}
	if in.MemorySize != nil {
		n.MemorySize = *in.MemorySize
	}
	if in.Environment != nil {
		n.Environment = &Environment{Variables: in.Environment.Variables}
		if n.Environment.Variables == nil {
			n.Environment.Variables = map[string]string{}
		}
	}
	if in.DeadLetterConfig != nil {
		if in.DeadLetterConfig.TargetArn == "" {
			n.DeadLetterConfig = nil
		} else {
			d := *in.DeadLetterConfig
			n.DeadLetterConfig = &d
		}
	}
	if in.TracingConfig != nil && in.TracingConfig.Mode != "" {
		t := *in.TracingConfig
		n.TracingConfig = &t
	}
	if in.EphemeralStorage != nil {
		n.EphemeralStorage = *in.EphemeralStorage
	}
	if in.LoggingConfig != nil {
		mergeLogging(&n.LoggingConfig, in.LoggingConfig)
	}
	return n
}

// Validate checks a complete configuration against AWS's limits. Model
// constraints come back as one ValidationException listing each violation;
// semantic refusals as InvalidParameterValueException.
func Validate(c *Config, layerCount int) error {
	var v violations
	checkRange(&v, &c.MemorySize, "memorySize", MinMemory, MaxMemory)
	checkRange(&v, &c.Timeout, "timeout", MinTimeout, MaxTimeout)
	checkRange(&v, &c.EphemeralStorage.Size, "ephemeralStorage.size", MinEphemeral, MaxEphemeral)
	if c.Runtime != "" && !KnownRuntime(c.Runtime) {
		v.add(c.Runtime, "runtime", "Member must satisfy enum value set: ["+strings.Join(Runtimes, ", ")+"] or be a valid ARN")
	}
	if !validRole(c.Role) {
		v.add(c.Role, "role", `Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+`)
	}
	if len(c.Handler) > 128 {
		v.add(c.Handler, "handler", "Member must have length less than or equal to 128")
	} else if strings.ContainsAny(c.Handler, " \t\r\n") {
		v.add(c.Handler, "handler", `Member must satisfy regular expression pattern: [^\s]+`)
	}
	if utf8.RuneCountInString(c.Description) > MaxDescription {
		v.add(c.Description, "description", "Member must have length less than or equal to 256")
	}
	if c.PackageType != PackageZip && c.PackageType != PackageImage {
		v.add(c.PackageType, "packageType", "Member must satisfy enum value set: [Image, Zip]")
	}
	if len(c.Architectures) != 1 {
		v.add(c.Architectures, "architectures", "Member must have length less than or equal to 1")
	} else if a := c.Architectures[0]; a != "x86_64" && a != "arm64" {
		v.add(c.Architectures, "architectures", "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]")
	}
	if tm := c.TracingConfig; tm != nil && tm.Mode != "Active" && tm.Mode != "PassThrough" {
		v.add(tm.Mode, "tracingConfig.mode", "Member must satisfy enum value set: [Active, PassThrough]")
	}
	if f := c.LoggingConfig.LogFormat; f != "" && f != "Text" && f != "JSON" {
		v.add(f, "loggingConfig.logFormat", "Member must satisfy enum value set: [JSON, Text]")
	}
	if err := v.err(); err != nil {
		return err
	}
	if c.PackageType == PackageImage {
		return errdefs.InvalidParameter("PackageType Image is not supported by this nubo server yet; upload a Zip deployment package")
	}
	if c.Runtime == "" || c.Handler == "" {
		return errdefs.InvalidParameter("Runtime and Handler are mandatory parameters for functions created with deployment packages.")
	}
	if !SupportedRuntime(c.Runtime) {
		return errdefs.InvalidParameter("The runtime parameter of %s is no longer supported for creating or updating AWS Lambda functions. We recommend you use a supported runtime while creating or updating functions.", c.Runtime)
	}
	if c.NuboNetwork != "" && c.NuboNetwork != "none" && c.NuboNetwork != "default" {
		return errdefs.InvalidParameter("NuboNetwork must be \"default\" or \"none\"")
	}
	if layerCount > MaxLayers {
		return errdefs.InvalidParameter("Cannot reference more than %d layers.", MaxLayers)
	}
	return checkEnvironment(c.Environment)
}

// CheckCodeSource refuses code sources nubo cannot fetch: there is no S3 or
// container registry behind a self-hosted server, so code arrives inline.
func CheckCodeSource(zip []byte, s3Bucket, s3Key, image string) error {
	switch {
	case s3Bucket != "" || s3Key != "":
		return errdefs.InvalidParameter("S3 code locations are not supported by this nubo server; send the deployment package as ZipFile")
	case image != "":
		return errdefs.InvalidParameter("PackageType Image is not supported by this nubo server yet; upload a Zip deployment package")
	case len(zip) == 0:
		return errdefs.InvalidParameter("Please provide a source for function code.")
	case len(zip) > MaxZippedBytes:
		return errdefs.TooLarge("Zipped size must be smaller than %d bytes", MaxZippedBytes)
	}
	return nil
}
