package function

import (
	"testing"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

func validConfig() *Config {
	return NewConfig(&CreateInput{FunctionName: "f", Runtime: "python3.12", Handler: "app.handler",
		Role: "arn:aws:iam::123456789012:role/r"})
}

func TestRuntimeValidation(t *testing.T) {
	for id, kind := range map[string]errdefs.Kind{
		"python3.12":      errdefs.KindUnknown, // accepted
		"provided.al2023": errdefs.KindUnknown,
		"nodejs24.x":      errdefs.KindUnknown,
		"python2.7":       errdefs.KindInvalidParameter, // in the enum, no longer supported
		"go1.x":           errdefs.KindInvalidParameter,
		"nodejs16.x":      errdefs.KindInvalidParameter,
		"python9.9":       errdefs.KindValidation, // not in the enum
		"Python3.12":      errdefs.KindValidation,
	} {
		c := validConfig()
		c.Runtime = id
		err := Validate(c, 0)
		if got := errdefs.KindOf(err); (err == nil) != (kind == errdefs.KindUnknown) || (err != nil && got != kind) {
			t.Errorf("runtime %q: got %v (kind %d), want kind %d", id, err, got, kind)
		}
	}
}

func TestLimits(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"memory low":      func(c *Config) { c.MemorySize = 127 },
		"memory high":     func(c *Config) { c.MemorySize = 10241 },
		"timeout":         func(c *Config) { c.Timeout = 901 },
		"ephemeral":       func(c *Config) { c.EphemeralStorage.Size = 511 },
		"role":            func(c *Config) { c.Role = "not-a-role" },
		"architecture":    func(c *Config) { c.Architectures = []string{"mips"} },
		"reserved env":    func(c *Config) { c.Environment = &Environment{Variables: map[string]string{"AWS_REGION": "x"}} },
		"too many layers": func(c *Config) {},
	} {
		c := validConfig()
		mutate(c)
		layers := 0
		if name == "too many layers" {
			layers = 6
		}
		if err := Validate(c, layers); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := Validate(validConfig(), 5); err != nil {
		t.Errorf("a valid configuration was refused: %v", err)
	}
}
