// Package nubo is the module root of nubo, a self-hosted platform that
// serves the AWS Lambda API and runs unmodified Lambda functions in
// isolated execution environments. The command is cmd/nubo; everything else
// lives in internal/, one package per Lambda or Linux concept (README.md).
package nubo
