package main

import (
	"net/http"
	"testing"
)

// TestAPIError: an error answer is worded as the AWS CLI words it, code
// and message; one that is not AWS-shaped is shown as it came.
func TestAPIError(t *testing.T) {
	aws := &http.Response{Status: "404 Not Found", StatusCode: 404,
		Header: http.Header{"X-Amzn-Errortype": {"ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.awslambda/"}}}
	if got, want := apiError(aws, []byte(`{"Type":"User","Message":"The specified log group does not exist."}`)).Error(),
		"ResourceNotFoundException (404): The specified log group does not exist."; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := apiError(aws, []byte(`{"message":"lower"}`)).Error(), "ResourceNotFoundException (404): lower"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	other := &http.Response{Status: "502 Bad Gateway", StatusCode: 502, Header: http.Header{}}
	if got, want := apiError(other, []byte("upstream gone")).Error(), "502 Bad Gateway: upstream gone"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
