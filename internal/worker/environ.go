package worker

import (
	"os"
	"sort"
	"strconv"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// Environment builds the runtime's environment variables: Lambda's set
// (DESIGN.md §3, LAMBDA-WIRE.md §1) with paths as the sandbox sees them,
// then the function's own variables (reserved keys were refused at create).
func Environment(v *control.Version, rt runtimes.Runtime, paths sandbox.Paths, region, logGroup, logStream, initType string) []string {
	c := &v.Config
	vars := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        c.FunctionName,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(c.MemorySize),
		"AWS_LAMBDA_FUNCTION_VERSION":     c.Version,
		"AWS_LAMBDA_INITIALIZATION_TYPE":  initType,
		"AWS_LAMBDA_LOG_GROUP_NAME":       logGroup,
		"AWS_LAMBDA_LOG_STREAM_NAME":      logStream,
		"AWS_LAMBDA_RUNTIME_API":          paths.RuntimeAPI,
		"AWS_REGION":                      region,
		"AWS_DEFAULT_REGION":              region,
		"LAMBDA_TASK_ROOT":                paths.TaskRoot,
		"LAMBDA_RUNTIME_DIR":              paths.RuntimeDir,
		"_HANDLER":                        c.Handler,
		"TZ":                              ":UTC",
		"LANG":                            "en_US.UTF-8",
		"PATH":                            "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:" + optSub(paths, "bin"),
		"LD_LIBRARY_PATH":                 "/var/lang/lib:/lib64:/usr/lib64:" + paths.RuntimeDir + ":" + paths.RuntimeDir + "/lib:" + paths.TaskRoot + ":" + paths.TaskRoot + "/lib:" + optSub(paths, "lib"),
		"AWS_XRAY_CONTEXT_MISSING":        "LOG_ERROR",
		"TMPDIR":                          paths.TmpDir,
		"HOME":                            paths.TmpDir,
	}
	if rt.ExecutionEnv != "" {
		vars["AWS_EXECUTION_ENV"] = rt.ExecutionEnv
	}
	// NODE_PATH and sys.path are left to nubo's runtime clients, which
	// derive them from LAMBDA_TASK_ROOT and /opt as Lambda's do.
	if paths.TmpDir == "/tmp" {
		// Inside a sandbox /tmp is already private; TMPDIR and HOME are
		// left as Lambda leaves them.
		delete(vars, "TMPDIR")
		delete(vars, "HOME")
	}
	if c.Environment != nil {
		for k, val := range c.Environment.Variables {
			vars[k] = val
		}
	}
	out := make([]string, 0, len(vars))
	for k, val := range vars {
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return out
}

func optSub(paths sandbox.Paths, sub string) string {
	if paths.OptDir == "" {
		return "/opt/" + sub
	}
	return paths.OptDir + "/" + sub
}

// providedBootstrap picks the entry point of a provided runtime: the
// function's bootstrap, else a layer's (LAMBDA-WIRE.md §1). The paths are
// checked on the host side of the sandbox's directories.
func providedBootstrap(paths sandbox.Paths) string {
	task := paths.TaskRoot + "/bootstrap"
	if paths.HostTaskRoot != "" && exists(paths.HostTaskRoot+"/bootstrap") {
		return task
	}
	if paths.OptDir != "" && exists(paths.HostOptDir+"/bootstrap") {
		return paths.OptDir + "/bootstrap"
	}
	return task
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
